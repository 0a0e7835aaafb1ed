//! Where the gateway may connect on a caller's behalf: the one guard for every URL a caller
//! supplies (a server's registration; what the health probe, `proxy_request` and
//! `/servers/{name}/mcp` then connect to).
//!
//! - Link-local addresses and cloud metadata services (`169.254.169.254`, `fd00:ec2::254`,
//!   `100.100.100.200`, `metadata.google.internal`, …) are always refused: a GET through the
//!   gateway would relay the host's managed-identity token.
//! - Loopback and private ranges are allowed with authentication off (the local operator
//!   develops against servers on the same machine); with authentication on, only those on the
//!   operator's allow-list (`MREG_UPSTREAM_ALLOW`: CIDRs or host names).
//! - The gateway's own listeners are always refused (a request loop through itself).
//!
//! Names are checked when a server is registered and again at every connection, on the
//! addresses the name resolves to then (a name that rebinds to a refused address after
//! registration does not pass): [`GuardedResolver`] is the resolver of both HTTP clients, and
//! connects only to the addresses it admitted. URLs with an IP literal skip resolvers, so
//! [`Egress::check_literal`] is called before each request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use url::{Host, Url};

/// Host names of cloud metadata services.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "instance-data",
    "instance-data.ec2.internal",
];

/// How long a registration waits for a name to resolve before leaving the check to connect time.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The request header that marks a request the gateway forwards: the instances it passed.
pub const HOP_HEADER: &str = "x-mreg-hop";

/// Most gateways one request may pass (a longer chain is taken for a loop).
pub const MAX_HOPS: usize = 8;

/// This process's id in [`HOP_HEADER`].
pub fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned())
}

/// Whether a hop header value shows a loop: it names this instance, or too many.
pub fn is_loop(hops: &str) -> bool {
    let mut count = 0;
    for hop in hops.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        count += 1;
        if hop == instance_id() || count >= MAX_HOPS {
            return true;
        }
    }
    false
}

/// What an address is, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// On the public internet.
    Public,
    /// Private, shared (CGNAT) or site-local ranges.
    Private,
    /// This machine (loopback, or the unspecified address, which reaches it too).
    Loopback,
    /// Link-local, or a cloud metadata service: never.
    Metadata,
    /// Multicast, broadcast, documentation, reserved: not a server.
    Reserved,
}

/// Whether `name` is loopback by definition (RFC 6761 §6.3): `localhost` or a name under it,
/// any case, with or without the trailing dot.
fn is_localhost(name: &str) -> bool {
    name.trim_end_matches('.')
        .rsplit('.')
        .next()
        .is_some_and(|last| last.eq_ignore_ascii_case("localhost"))
}

/// What `ip` is. IPv4 addresses embedded in IPv6 (mapped, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) are judged as the IPv4 address they reach.
pub fn kind(ip: IpAddr) -> Kind {
    match ip {
        IpAddr::V4(v4) => kind_v4(v4),
        IpAddr::V6(v6) => kind_v6(v6),
    }
}

fn kind_v4(v4: Ipv4Addr) -> Kind {
    let [a, b, c, d] = v4.octets();
    if v4.is_link_local() || [a, b, c, d] == [100, 100, 100, 200] {
        Kind::Metadata
    } else if v4.is_loopback() || v4.is_unspecified() || a == 0 {
        Kind::Loopback
    } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
        Kind::Private
    } else if v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
    {
        Kind::Reserved
    } else {
        Kind::Public
    }
}

fn kind_v6(v6: Ipv6Addr) -> Kind {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return kind_v4(v4);
    }
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return kind_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return kind_v4(embedded(s[1], s[2]));
    }
    if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) || (s[0] & 0xffc0) == 0xfe80 {
        Kind::Metadata
    } else if v6.is_loopback() || v6.is_unspecified() {
        Kind::Loopback
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        Kind::Private
    } else if v6.is_multicast()
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // Teredo (2001::/32) and local-use NAT64 (64:ff9b:1::/48) hide where they lead.
        || (s[0] == 0x2001 && s[1] == 0)
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
    {
        Kind::Reserved
    } else {
        Kind::Public
    }
}

/// One entry of the operator's allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// An address range.
    Net(IpAddr, u8),
    /// A host name (exact, lowercase).
    Name(String),
}

impl Allowed {
    /// Parses `10.1.0.0/16`, `::1/128`, `127.0.0.1` or `mcp.internal.example`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some((ip, bits)) = text.split_once('/') {
            let ip: IpAddr = ip.parse().map_err(|_| format!("'{text}' is not a CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits: u8 = bits
                .parse()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("'{text}': the prefix length must be 0 to {max}"))?;
            return Ok(Self::Net(ip, bits));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
        }
        match Host::parse(text) {
            Ok(Host::Domain(name)) if !name.contains(['/', ':', '@']) => {
                Ok(Self::Name(name.to_ascii_lowercase()))
            }
            _ => Err(format!("'{text}' is neither a CIDR nor a host name")),
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Self::Net(IpAddr::V4(net), bits), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(*net)) << 96,
                u128::from(u32::from(ip)) << 96,
                *bits,
            ),
            (Self::Net(IpAddr::V6(net), bits), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(*net), u128::from(ip), *bits)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8) -> bool {
    bits == 0 || (a ^ b) >> (128 - u32::from(bits)) == 0
}

/// The egress policy of one gateway.
#[derive(Debug, Default)]
pub struct Egress {
    /// Loopback and private destinations allowed everywhere (authentication off).
    internal: bool,
    allow: Vec<Allowed>,
    /// The gateway's own listeners.
    own: std::sync::RwLock<Vec<SocketAddr>>,
    /// The host and port of the gateway's public URL.
    public: Option<(String, u16)>,
}

impl Egress {
    /// A policy: loopback and private ranges allowed when `internal`, else only `allow`.
    pub fn new(internal: bool, allow: Vec<Allowed>, public_url: Option<&Url>) -> Self {
        Self {
            internal,
            allow,
            own: std::sync::RwLock::default(),
            public: public_url.and_then(|u| {
                Some((
                    u.host_str()?.to_ascii_lowercase(),
                    u.port_or_known_default()?,
                ))
            }),
        }
    }

    /// Records the addresses the gateway listens on (refused as destinations).
    pub fn listening_on(&self, addrs: &[SocketAddr]) {
        if let Ok(mut own) = self.own.write() {
            own.extend_from_slice(addrs);
        }
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        let Ok(own) = self.own.read() else {
            return false;
        };
        own.iter().any(|listener| {
            listener.port() == addr.port()
                && (listener.ip() == addr.ip()
                    || listener.ip().is_unspecified()
                    || (listener.ip().is_loopback() && kind(addr.ip()) == Kind::Loopback))
        })
    }

    /// Why the gateway may not connect to `ip` (for a URL naming `name`), if it may not.
    fn refuses_ip(&self, ip: IpAddr, name: Option<&str>) -> Option<String> {
        let allowed = || {
            self.allow.iter().any(|a| match a {
                Allowed::Net(..) => a.contains(ip),
                Allowed::Name(n) => name.is_some_and(|name| name.eq_ignore_ascii_case(n)),
            })
        };
        match kind(ip) {
            Kind::Public => None,
            Kind::Metadata => Some(format!(
                "{ip} is a link-local or cloud metadata address, which the gateway never connects to"
            )),
            Kind::Reserved => Some(format!("{ip} is a reserved address, not a server")),
            Kind::Loopback | Kind::Private if self.internal || allowed() => None,
            Kind::Loopback | Kind::Private => Some(format!(
                "{ip} is a loopback or private address; with authentication on, only those in MREG_UPSTREAM_ALLOW may be used"
            )),
        }
    }

    /// Why the gateway may not connect to `addr`, if it may not.
    pub fn refuses(&self, addr: SocketAddr, name: Option<&str>) -> Option<String> {
        if self.is_own(addr) {
            return Some(format!(
                "{addr} is this gateway's own listener (a request loop)"
            ));
        }
        self.refuses_ip(addr.ip(), name)
    }

    /// Checks a URL whose host is an IP literal (resolvers never see those), or a metadata name.
    pub fn check_literal(&self, url: &Url) -> Result<(), String> {
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            Some(Host::Ipv4(ip)) => self.refuses(SocketAddr::new(ip.into(), port), None),
            Some(Host::Ipv6(ip)) => self.refuses(SocketAddr::new(ip.into(), port), None),
            // Names that are loopback by definition (RFC 6761: `localhost`, `*.localhost`, with
            // or without the root's dot) are judged as loopback here, whether or not this
            // machine's resolver answers for them (`localhost.` passed, unresolved).
            // Like a resolved name, it passes when one of its addresses may be used (the
            // connection goes there), and never when it is this gateway's own listener.
            Some(Host::Domain(name)) if is_localhost(name) => {
                let v4 = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
                let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port);
                match [v4, v6].into_iter().find(|addr| self.is_own(*addr)) {
                    Some(own) => self.refuses(own, Some(name)),
                    None => self
                        .refuses_ip(v4.ip(), Some(name))
                        .filter(|_| self.refuses_ip(v6.ip(), Some(name)).is_some()),
                }
            }
            Some(Host::Domain(name)) => self.refuses_name(name, port),
            None => Some("the URL names no host".to_owned()),
        }
        .map_or(Ok(()), Err)
    }

    /// [`Egress::check_literal`] for a request URI about to be sent.
    pub fn check_uri(&self, uri: &axum::http::Uri) -> Result<(), String> {
        let Some(host) = uri.host() else {
            return Err("the URL names no host".to_owned());
        };
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.refuses(SocketAddr::new(ip, port), None),
            Err(_) => self.refuses_name(bare, port),
        }
        .map_or(Ok(()), Err)
    }

    fn refuses_name(&self, name: &str, port: u16) -> Option<String> {
        // Checked before every proxied request: compared without allocating.
        let name = name.trim_end_matches('.');
        if METADATA_NAMES.iter().any(|m| m.eq_ignore_ascii_case(name)) {
            return Some(format!(
                "{name} is a cloud metadata service, which the gateway never connects to"
            ));
        }
        if self
            .public
            .as_ref()
            .is_some_and(|(host, p)| host.eq_ignore_ascii_case(name) && *p == port)
        {
            return Some(format!(
                "{name}:{port} is this gateway's public URL (a request loop)"
            ));
        }
        None
    }

    /// Checks a URL a caller supplies: its literal address, or every address its name resolves
    /// to now. A name that does not resolve yet passes (it is checked again at connect time).
    pub async fn check_url(&self, url: &Url) -> Result<(), String> {
        self.check_literal(url)?;
        let Some(Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)));
        let Ok(Ok(addrs)) = resolved.await else {
            return Ok(());
        };
        for addr in addrs {
            if let Some(why) = self.refuses(addr, Some(name)) {
                return Err(format!(
                    "{name} resolves to an address mreg may not use: {why}"
                ));
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl domain::UrlGuard for Egress {
    async fn admit(&self, url: &str) -> Result<(), String> {
        let url = Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
        self.check_url(&url).await
    }
}

/// The DNS resolver of the gateway's HTTP clients: resolves a name and keeps only the addresses
/// the egress policy admits, so a connection goes only where the guard allowed.
#[derive(Clone)]
pub struct GuardedResolver {
    egress: Arc<Egress>,
}

impl GuardedResolver {
    /// A resolver enforcing `egress`.
    pub fn new(egress: Arc<Egress>) -> Self {
        Self { egress }
    }

    async fn resolve(egress: Arc<Egress>, name: String) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(why) = egress.refuses_name(&name, 0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("egress refused: {why}"),
            ));
        }
        let mut refused = None;
        let admitted: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
            .await?
            .filter(|addr| match egress.refuses_ip(addr.ip(), Some(&name)) {
                None => true,
                Some(why) => {
                    refused = Some(why);
                    false
                }
            })
            .collect();
        match (admitted.is_empty(), refused) {
            (true, Some(why)) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("egress refused: {name} resolves to an address mreg may not use: {why}"),
            )),
            _ => Ok(admitted),
        }
    }
}

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = futures_util::future::BoxFuture<'static, std::io::Result<Self::Response>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let egress = self.egress.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move { Ok(Self::resolve(egress, name).await?.into_iter()) })
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.egress.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: reqwest::dns::Addrs =
                Box::new(Self::resolve(egress, name).await?.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn addresses_are_classified_with_embedded_ipv4_unwrapped() {
        for (text, expected) in [
            ("8.8.8.8", Kind::Public),
            ("2606:4700::1111", Kind::Public),
            ("169.254.169.254", Kind::Metadata),
            ("fd00:ec2::254", Kind::Metadata),
            ("100.100.100.200", Kind::Metadata),
            ("fe80::1", Kind::Metadata),
            ("::ffff:169.254.169.254", Kind::Metadata),
            ("64:ff9b::a9fe:a9fe", Kind::Metadata),
            ("2002:a9fe:a9fe::1", Kind::Metadata),
            ("127.0.0.1", Kind::Loopback),
            ("0.0.0.0", Kind::Loopback),
            ("::1", Kind::Loopback),
            ("::", Kind::Loopback),
            ("64:ff9b::7f00:1", Kind::Loopback),
            ("10.1.2.3", Kind::Private),
            ("172.16.0.1", Kind::Private),
            ("192.168.1.1", Kind::Private),
            ("100.64.0.1", Kind::Private),
            ("fd12::1", Kind::Private),
            ("fec0::1", Kind::Private),
            ("64:ff9b::a00:1", Kind::Private),
            ("192.0.0.8", Kind::Reserved),
            ("2001::1", Kind::Reserved),
            ("64:ff9b:1::1", Kind::Reserved),
            ("224.0.0.1", Kind::Reserved),
            ("255.255.255.255", Kind::Reserved),
        ] {
            assert_eq!(kind(ip(text)), expected, "{text}");
        }
    }

    #[test]
    fn internal_destinations_need_the_allow_list_with_authentication_on() {
        let allow = vec![
            Allowed::parse("10.1.0.0/16").expect("cidr"),
            Allowed::parse("mcp.internal.example").expect("name"),
        ];
        let on = Egress::new(false, allow, None);
        assert!(on.refuses_ip(ip("10.1.2.3"), None).is_none());
        assert!(on.refuses_ip(ip("10.2.0.1"), None).is_some());
        assert!(on.refuses_ip(ip("127.0.0.1"), None).is_some());
        assert!(
            on.refuses_ip(ip("192.168.0.9"), Some("mcp.internal.example"))
                .is_none()
        );
        assert!(on.refuses_ip(ip("8.8.8.8"), None).is_none());
        let off = Egress::new(true, Vec::new(), None);
        assert!(off.refuses_ip(ip("127.0.0.1"), None).is_none());
        assert!(off.refuses_ip(ip("192.168.0.9"), None).is_none());
        for never in ["169.254.169.254", "fd00:ec2::254"] {
            assert!(off.refuses_ip(ip(never), None).is_some(), "{never}");
            let everything = Egress::new(false, vec![Allowed::parse("::/0").expect("all")], None);
            assert!(everything.refuses_ip(ip(never), None).is_some(), "{never}");
        }
        assert!(Allowed::parse("10.0.0.0/33").is_err());
        assert!(Allowed::parse("http://x").is_err());
    }

    #[test]
    fn the_gateway_itself_and_metadata_names_are_refused() {
        let public = Url::parse("https://mreg.example.com").expect("url");
        let egress = Egress::new(true, Vec::new(), Some(&public));
        egress.listening_on(&["127.0.0.1:8001".parse().expect("addr")]);
        let check = |u: &str| egress.check_literal(&Url::parse(u).expect("url"));
        assert!(check("http://127.0.0.1:8001/servers/loop/mcp").is_err());
        for own in [
            "http://localhost:8001/mcp",
            "http://localhost.:8001/mcp",
            "http://LOCALHOST.:8001/mcp",
            "http://app.localhost:8001/mcp",
        ] {
            assert!(check(own).is_err(), "{own}: loopback by definition");
        }
        assert!(
            check("http://localhost:8002/mcp").is_ok(),
            "another loopback port"
        );
        assert!(
            check("http://notlocalhost:8001/mcp").is_ok(),
            "other names are checked when resolved"
        );
        assert!(check("http://127.0.0.1:8002/mcp").is_ok());
        assert!(check("https://mreg.example.com/servers/x/mcp").is_err());
        assert!(check("http://metadata.google.internal/computeMetadata/v1/").is_err());
        assert!(check("http://169.254.169.254/latest/meta-data/").is_err());
    }

    #[test]
    fn a_hop_chain_naming_this_instance_or_too_long_is_a_loop() {
        assert!(!is_loop(""));
        assert!(!is_loop("aaaa, bbbb"));
        assert!(is_loop(&format!("aaaa,{}", instance_id())));
        assert!(is_loop(&["x"; MAX_HOPS].join(",")));
    }
}

#[cfg(test)]
mod resolver_tests {
    use super::*;

    #[tokio::test]
    async fn the_resolver_connects_only_to_admitted_addresses() {
        // With authentication on and no allow-list, a name resolving to loopback (a rebound
        // name) gets no address to connect to.
        let on = Arc::new(Egress::new(false, Vec::new(), None));
        let refused = GuardedResolver::resolve(on, "localhost".to_owned())
            .await
            .expect_err("refused");
        assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(refused.to_string().contains("egress refused"), "{refused}");
        let allowed = Arc::new(Egress::new(
            false,
            vec![Allowed::parse("127.0.0.0/8").expect("cidr")],
            None,
        ));
        let addrs = GuardedResolver::resolve(allowed, "localhost".to_owned())
            .await
            .expect("admitted");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        let metadata = Arc::new(Egress::new(true, Vec::new(), None));
        assert!(
            GuardedResolver::resolve(metadata, "metadata.google.internal".to_owned())
                .await
                .is_err()
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn an_ipv4_address_is_judged_alike_in_every_ipv6_form(v4 in any::<u32>()) {
            let v4 = Ipv4Addr::from(v4);
            let kind = kind(IpAddr::V4(v4));
            prop_assert_eq!(super::kind(IpAddr::V6(v4.to_ipv6_mapped())), kind);
            let [a, b, c, d] = v4.octets();
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            prop_assert_eq!(super::kind(IpAddr::V6(nat64)), kind);
            let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1);
            prop_assert_eq!(super::kind(IpAddr::V6(six_to_four)), kind);
        }

        #[test]
        fn allow_list_entries_parse_or_refuse_without_panicking(text in any::<String>()) {
            let _ = Allowed::parse(&text);
        }

        #[test]
        fn metadata_is_refused_whatever_the_allow_list(bits in 0_u8..=32, net in any::<u32>()) {
            let egress = Egress::new(false, vec![Allowed::Net(IpAddr::V4(Ipv4Addr::from(net)), bits)], None);
            prop_assert!(egress.refuses_ip("169.254.169.254".parse().expect("ip"), None).is_some());
        }
    }
}
