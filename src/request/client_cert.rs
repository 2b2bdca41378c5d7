//! Client-certificate facts as Cloudflare reports them. Facts, not proof: the identity layer's
//! mTLS mechanism decides what they prove.

use http::HeaderMap;

/// What Cloudflare said about certificate validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertVerification {
    /// `SUCCESS` (Workers) or `true`/`1` (headers): the chain verified against the zone's CA.
    Success,
    /// `FAILED:<reason>` or `false`/`0`/`NONE`, or any value not recognised (fail closed).
    Failed(String),
}

/// Client-certificate facts from `request.cf.tlsClientAuth` (Workers) or the `cf-cert-*`
/// headers of the "Add TLS client auth headers" managed transform (native origins).
///
/// Every field is bounded (256 bytes for names and serials). A longer name or serial is dropped
/// (read as absent), never cut: a cut value could equal a pin it does not match. The fingerprint
/// is kept only when it is a SHA-256 fingerprint ([`ClientCertFacts::normalize_fingerprint`]);
/// anything else sent there (`not-a-fingerprint`, 63 or 65 digits, markup, a path) is dropped and
/// flagged in [`ClientCertFacts::fingerprint_malformed`], so it can never name a principal.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientCertFacts {
    /// A certificate was presented (`certPresented` "1", `cf-cert-presented` true).
    pub presented: bool,
    /// Validation result.
    pub verified: Option<CertVerification>,
    /// `Some(true)` revoked, `Some(false)` explicitly not revoked, `None` unknown.
    pub revoked: Option<bool>,
    /// SHA-256 fingerprint: 64 lowercase hex digits, no separators
    /// ([`ClientCertFacts::normalize_fingerprint`] of what was sent).
    pub fingerprint_sha256: Option<String>,
    /// A fingerprint was sent but is not a SHA-256 fingerprint (so
    /// [`fingerprint_sha256`](Self::fingerprint_sha256) is `None`): the mechanism refuses the
    /// certificate rather than treating it as one without a fingerprint.
    pub fingerprint_malformed: bool,
    /// Subject DN.
    pub subject_dn: Option<String>,
    /// Issuer DN.
    pub issuer_dn: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
}

const MAX_FIELD: usize = 256;
/// Hex digits of a SHA-256 digest.
const FINGERPRINT_HEX: usize = 64;

impl ClientCertFacts {
    /// Reads the `cf-cert-*` headers; `None` when none is present. Only call this for a hop
    /// you trust to set them (see `RequestLimits::trust_client_cert_headers`).
    ///
    /// A field sent more than once has no single reading (which copy did the trusted hop set?),
    /// so the certificate counts as presented and not verified.
    pub fn from_cf_headers(headers: &HeaderMap) -> Option<Self> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        if !headers.keys().any(|k| k.as_str().starts_with("cf-cert-")) {
            return None;
        }
        if CF_HEADERS.iter().any(|name| headers.get_all(*name).iter().nth(1).is_some()) {
            return Some(Self {
                presented: true,
                verified: Some(CertVerification::Failed("repeated cf-cert-* header".to_owned())),
                ..Self::default()
            });
        }
        Some(Self::from_fields(|field| get(CF_HEADERS[field as usize])))
    }

    /// Builds the facts from `request.cf.tlsClientAuth`-style string fields (`certPresented`,
    /// `certVerified`, `certRevoked`, `certFingerprintSHA256`, `certSubjectDN`, `certIssuerDN`,
    /// `certSerial`). Absent fields are `None`; nothing here panics on odd input.
    pub fn from_tls_client_auth<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self::from_fields(|field| {
            get(match field {
                Field::Presented => "certPresented",
                Field::Verified => "certVerified",
                Field::Revoked => "certRevoked",
                Field::Fingerprint => "certFingerprintSHA256",
                Field::SubjectDn => "certSubjectDN",
                Field::IssuerDn => "certIssuerDN",
                Field::Serial => "certSerial",
            })
        })
    }

    /// A SHA-256 fingerprint in the one form ztgate compares and reports: 64 lowercase hex
    /// digits without separators. Accepts 64 hex digits in any case, or 32 two-digit groups
    /// separated by single `:` (`AB:12:…`, as `openssl x509 -fingerprint` prints it), with
    /// surrounding ASCII whitespace; `None` for anything else. Certificate facts and
    /// [`ClientCertAuth`](crate::identity::ClientCertAuth) pins both go through it, so a pin
    /// and a reported value match whichever of the two forms each was written in.
    pub fn normalize_fingerprint(text: &str) -> Option<String> {
        let text = text.trim_ascii();
        let digits: String = match text.len() {
            FINGERPRINT_HEX => text.to_owned(),
            // 32 groups of 2 digits and 31 separators.
            95 => {
                let groups: Vec<&str> = text.split(':').collect();
                if groups.len() != FINGERPRINT_HEX / 2 || groups.iter().any(|g| g.len() != 2) {
                    return None;
                }
                groups.concat()
            }
            _ => return None,
        };
        digits.bytes().all(|b| b.is_ascii_hexdigit()).then(|| digits.to_ascii_lowercase())
    }

    fn from_fields<'a>(get: impl Fn(Field) -> Option<&'a str>) -> Self {
        let bounded = |f: Field| get(f).filter(|v| !v.is_empty() && v.len() <= MAX_FIELD).map(str::to_owned);
        let fingerprint = get(Field::Fingerprint).map(Self::normalize_fingerprint);
        Self {
            presented: get(Field::Presented).is_some_and(is_true),
            verified: get(Field::Verified).map(|v| {
                if is_true(v) {
                    CertVerification::Success
                } else {
                    CertVerification::Failed(super::truncate(v, MAX_FIELD).to_owned())
                }
            }),
            revoked: get(Field::Revoked).and_then(|v| {
                if is_true(v) {
                    Some(true)
                } else if is_false(v) {
                    Some(false)
                } else {
                    None
                }
            }),
            fingerprint_malformed: matches!(fingerprint, Some(None)),
            fingerprint_sha256: fingerprint.flatten(),
            subject_dn: bounded(Field::SubjectDn),
            issuer_dn: bounded(Field::IssuerDn),
            serial: bounded(Field::Serial),
        }
    }
}

/// The header of each [`Field`], in its order.
const CF_HEADERS: [&str; 7] = [
    "cf-cert-presented",
    "cf-cert-verified",
    "cf-cert-revoked",
    "cf-cert-fingerprint-sha256",
    "cf-cert-subject-dn",
    "cf-cert-issuer-dn",
    "cf-cert-serial",
];

#[derive(Clone, Copy)]
enum Field {
    Presented,
    Verified,
    Revoked,
    Fingerprint,
    SubjectDn,
    IssuerDn,
    Serial,
}

/// The accepted spellings of "yes": `1`, `true`, `SUCCESS` (ASCII case-insensitive).
fn is_true(v: &str) -> bool {
    v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("success")
}

fn is_false(v: &str) -> bool {
    v == "0" || v.eq_ignore_ascii_case("false")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    const LOWER: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // pragma: allowlist secret
    const UPPER: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"; // pragma: allowlist secret

    fn colon_form(hex: &str) -> String {
        hex.as_bytes().chunks(2).map(|pair| std::str::from_utf8(pair).unwrap()).collect::<Vec<_>>().join(":")
    }

    #[test]
    fn a_fingerprint_is_64_hex_digits_or_32_colon_separated_pairs_and_nothing_else() {
        let normalized = |s: &str| ClientCertFacts::normalize_fingerprint(s);
        for good in
            [LOWER.to_owned(), UPPER.to_owned(), colon_form(UPPER), colon_form(LOWER), format!(" {LOWER}\t")]
        {
            assert_eq!(normalized(&good).as_deref(), Some(LOWER), "{good:?}");
        }
        let colons = colon_form(LOWER);
        for bad in [
            "not-a-fingerprint".to_owned(),
            String::new(),
            LOWER[..63].to_owned(),
            format!("{LOWER}0"),
            format!("{}g", &LOWER[..63]),
            format!("<b>{}</b>", &LOWER[..57]),
            format!("../../{}", &LOWER[..58]),
            format!("user:admin@{}", &LOWER[..53]),
            colons[..94].to_owned(),
            format!("{colons}:"),
            format!(":{}", &colons[1..]),
            colons.replacen(':', "::", 1)[..95].to_owned(),
            colons.replace(':', "-"),
            format!("{}:{}", &LOWER[..62], &LOWER[62..]),
            "é".repeat(32),
            format!("{LOWER} {LOWER}"),
        ] {
            assert_eq!(normalized(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_malformed_fingerprint_is_flagged_never_kept() {
        for (sent, kept, malformed) in [
            (colon_form(UPPER), Some(LOWER), false),
            ("not-a-fingerprint".to_owned(), None, true),
            (LOWER[..63].to_owned(), None, true),
            ("a".repeat(300), None, true),
            (" ".to_owned(), None, true),
        ] {
            let f =
                ClientCertFacts::from_cf_headers(&headers(&[("cf-cert-fingerprint-sha256", &sent)])).unwrap();
            assert_eq!(
                (f.fingerprint_sha256.as_deref(), f.fingerprint_malformed),
                (kept, malformed),
                "{sent:?}"
            );
            let f = ClientCertFacts::from_tls_client_auth(|k| {
                (k == "certFingerprintSHA256").then_some(sent.as_str())
            });
            assert_eq!(
                (f.fingerprint_sha256.as_deref(), f.fingerprint_malformed),
                (kept, malformed),
                "{sent:?}"
            );
        }
        let absent = ClientCertFacts::from_cf_headers(&headers(&[("cf-cert-presented", "1")])).unwrap();
        assert_eq!((absent.fingerprint_sha256, absent.fingerprint_malformed), (None, false));
    }

    #[test]
    fn accepts_true_forms_and_refuses_everything_else() {
        for yes in ["1", "true", "TRUE", "SUCCESS", "success"] {
            let f = ClientCertFacts::from_cf_headers(&headers(&[("cf-cert-verified", yes)])).unwrap();
            assert_eq!(f.verified, Some(CertVerification::Success), "{yes}");
        }
        for no in
            ["0", "false", "NONE", "FAILED:unable to get local issuer certificate", "yes", "", "SUCCESS!"]
        {
            let f = ClientCertFacts::from_cf_headers(&headers(&[("cf-cert-verified", no)])).unwrap();
            assert!(matches!(f.verified, Some(CertVerification::Failed(_))), "{no}");
        }
    }

    #[test]
    fn revocation_must_be_explicit() {
        let f =
            |v: &str| ClientCertFacts::from_cf_headers(&headers(&[("cf-cert-revoked", v)])).unwrap().revoked;
        assert_eq!(f("0"), Some(false));
        assert_eq!(f("false"), Some(false));
        assert_eq!(f("1"), Some(true));
        assert_eq!(f("maybe"), None);
    }

    #[test]
    fn no_cert_headers_means_no_facts() {
        assert_eq!(ClientCertFacts::from_cf_headers(&headers(&[("x-other", "1")])), None);
    }

    #[test]
    fn workers_fields_are_read_without_panicking_on_absence() {
        let f = ClientCertFacts::from_tls_client_auth(|k| match k {
            "certPresented" => Some("1"),
            "certVerified" => Some("SUCCESS"),
            "certRevoked" => Some("0"),
            "certFingerprintSHA256" => Some(UPPER),
            _ => None,
        });
        assert!(f.presented);
        assert_eq!(f.verified, Some(CertVerification::Success));
        assert_eq!(f.revoked, Some(false));
        assert_eq!(f.fingerprint_sha256.as_deref(), Some(LOWER));
        assert!(!f.fingerprint_malformed);
        assert_eq!(f.subject_dn, None);
        assert_eq!(ClientCertFacts::from_tls_client_auth(|_| None), ClientCertFacts::default());
    }
}
