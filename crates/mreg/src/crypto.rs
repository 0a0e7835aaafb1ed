//! Authenticated encryption (AES-256-GCM, from aws-lc-rs, already in the tree through rustls)
//! for secrets at rest and for the session tokens handed to MCP clients.
//!
//! Each purpose (upstream credentials, signing keys, session tokens, …) seals with a key of its
//! own, derived from the master key with HKDF-SHA256 (the purpose is the `info`): a busy purpose
//! (session tokens) does not use up the random-nonce budget of the others, and the purpose is
//! also the AEAD's associated data. A sealed value is `2 || nonce (12 bytes) || ciphertext ||
//! tag`. Values sealed before per-purpose keys (`nonce || ciphertext || tag` under the master
//! key) still open: a value that does not open as the current form is tried as the old one
//! (both are authenticated, so neither can pass for the other).

use std::collections::HashMap;
use std::sync::RwLock;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use domain::{Error, Result, Sealer, SecretStore};
use secrecy::ExposeSecret;

use crate::config::Config;

/// Name of the generated key in the database.
const KEY_NAME: &str = "encryption-key/v1";
/// The name (and purpose, and content) of the value that says which key sealed the database's
/// secrets (see `Cipher::check_against`).
const KEY_CHECK: &str = "encryption-key-check/v1";

/// The first byte of a value sealed with a per-purpose key.
const PER_PURPOSE: u8 = 2;

/// The HKDF salt of the per-purpose keys.
const SALT: &[u8] = b"mreg/seal/v2";

/// A master key and the AES-256-GCM keys derived from it.
pub struct Cipher {
    master: [u8; 32],
    /// The master key itself, for values sealed before per-purpose keys.
    legacy: LessSafeKey,
    derived: RwLock<HashMap<String, std::sync::Arc<LessSafeKey>>>,
    random: SystemRandom,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// A cipher with this key.
    pub fn new(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is valid for AES-256-GCM"));
        Self {
            master: *key,
            legacy: LessSafeKey::new(unbound),
            derived: RwLock::default(),
            random: SystemRandom::new(),
        }
    }

    /// The key of `purpose` (derived once, then kept).
    fn key(&self, purpose: &str) -> std::sync::Arc<LessSafeKey> {
        if let Some(key) = self
            .derived
            .read()
            .ok()
            .and_then(|k| k.get(purpose).cloned())
        {
            return key;
        }
        let info = [purpose.as_bytes()];
        let prk = Salt::new(HKDF_SHA256, SALT).extract(&self.master);
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .unwrap_or_else(|_| unreachable!("32 bytes are within HKDF-SHA256's output limit"));
        let key = std::sync::Arc::new(LessSafeKey::new(UnboundKey::from(okm)));
        if let Ok(mut derived) = self.derived.write() {
            derived.insert(purpose.to_owned(), key.clone());
        }
        key
    }

    /// Opens `nonce || ciphertext || tag` with `key`.
    fn open_with(key: &LessSafeKey, purpose: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        key.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut body)
            .ok()
            .map(|plain| plain.to_vec())
    }

    /// The configured key (`MREG_ENCRYPTION_KEY`), or the one kept in the database, generated
    /// on first use and then shared by every replica.
    pub async fn from_config(config: &Config, secrets: &dyn SecretStore) -> anyhow::Result<Self> {
        if let Some(key) = &config.encryption_key {
            let cipher = Self::new(key.expose_secret());
            cipher.check_against(secrets).await?;
            return Ok(cipher);
        }
        let mut candidate = [0_u8; 32];
        SystemRandom::new()
            .fill(&mut candidate)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        let stored = secrets.get_or_insert(KEY_NAME, &candidate).await?;
        let key: [u8; 32] = stored
            .try_into()
            .map_err(|_| anyhow::anyhow!("the stored encryption key is not 32 bytes"))?;
        Ok(Self::new(&key))
    }
}

impl Cipher {
    /// Refuses a key that does not open what the database was sealed with: the first start
    /// stores a value sealed with its key, and every later one (every replica) must open it.
    /// A replica with another key otherwise started and said it was ready, then could not open
    /// the signing keys, the upstream credentials or its peers' sessions.
    async fn check_against(&self, secrets: &dyn SecretStore) -> anyhow::Result<()> {
        let sealed = self.seal(KEY_CHECK, KEY_CHECK.as_bytes());
        let stored = secrets.get_or_insert(KEY_CHECK, &sealed).await?;
        match self.open(KEY_CHECK, &stored) {
            Ok(opened) if opened == KEY_CHECK.as_bytes() => Ok(()),
            _ => anyhow::bail!(
                "MREG_ENCRYPTION_KEY is not the key this database's secrets were sealed with: every replica (and every restart) must use the same key; with another one, the signing keys, upstream credentials and sessions cannot be opened"
            ),
        }
    }
}

impl Sealer for Cipher {
    fn seal(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0_u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .unwrap_or_else(|_| panic!("the system random generator failed"));
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.push(PER_PURPOSE);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key(purpose)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut body,
            )
            .unwrap_or_else(|_| unreachable!("sealing a small buffer cannot fail"));
        out.extend_from_slice(&body);
        out
    }

    fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let current = match sealed.split_first() {
            Some((&PER_PURPOSE, rest)) => Self::open_with(&self.key(purpose), purpose, rest),
            _ => None,
        };
        current
            .or_else(|| Self::open_with(&self.legacy, purpose, sealed))
            .ok_or_else(|| Error::invalid("sealed value", "cannot be opened"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_purpose() {
        let cipher = Cipher::new(&[7; 32]);
        let sealed = cipher.seal("a", b"secret");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(cipher.open("a", &sealed).ok(), Some(b"secret".to_vec()));
        assert!(cipher.open("b", &sealed).is_err());
        assert!(Cipher::new(&[8; 32]).open("a", &sealed).is_err());
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(cipher.open("a", &tampered).is_err());
        assert!(cipher.open("a", &sealed[..10]).is_err());
        assert_ne!(
            cipher.seal("a", b"secret"),
            sealed,
            "every seal uses a fresh nonce"
        );
    }

    #[test]
    fn each_purpose_has_its_own_key_and_old_values_still_open() {
        let cipher = Cipher::new(&[7; 32]);
        let sealed = cipher.seal("a", b"secret");
        assert_eq!(sealed[0], PER_PURPOSE);
        // The same bytes under the master key itself do not open: the key is not the master.
        assert!(Cipher::open_with(&cipher.legacy, "a", &sealed[1..]).is_none());
        // A value sealed the old way (master key, no version byte) still opens.
        let mut nonce = [3_u8; NONCE_LEN];
        nonce[0] = PER_PURPOSE; // even when its nonce starts like the current form
        let mut body = b"old secret".to_vec();
        cipher
            .legacy
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from("a".as_bytes()),
                &mut body,
            )
            .expect("seal");
        let old = [nonce.as_slice(), &body].concat();
        assert_eq!(cipher.open("a", &old).ok(), Some(b"old secret".to_vec()));
        assert!(cipher.open("b", &old).is_err());
    }
}
