//! Authenticated encryption (AES-256-GCM, from aws-lc-rs, already in the tree through rustls)
//! for secrets at rest and for the session tokens handed to MCP clients.
//!
//! A sealed value is `nonce (12 bytes) || ciphertext || tag`. The purpose string is the AEAD's
//! associated data, so a value sealed for one purpose (say, upstream credentials) never opens as
//! another (a session token).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use domain::{Error, Result, Sealer, SecretStore};
use secrecy::ExposeSecret;

use crate::config::Config;

/// Name of the generated key in the database.
const KEY_NAME: &str = "encryption-key/v1";

/// An AES-256-GCM key.
pub struct Cipher {
    key: LessSafeKey,
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
            key: LessSafeKey::new(unbound),
            random: SystemRandom::new(),
        }
    }

    /// The configured key (`MREG_ENCRYPTION_KEY`), or the one kept in the database, generated
    /// on first use and then shared by every replica.
    pub async fn from_config(config: &Config, secrets: &dyn SecretStore) -> anyhow::Result<Self> {
        if let Some(key) = &config.encryption_key {
            return Ok(Self::new(key.expose_secret()));
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

impl Sealer for Cipher {
    fn seal(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0_u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .unwrap_or_else(|_| panic!("the system random generator failed"));
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
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
        let bad = || Error::invalid("sealed value", "cannot be opened");
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(bad());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut body)
            .map_err(|_| bad())?;
        Ok(plain.to_vec())
    }
}

/// Lower-case hex of `bytes` (no allocation per byte: this runs on every request).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends the lower-case hex of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

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
}
