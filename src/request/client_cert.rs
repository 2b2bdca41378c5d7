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
/// Every field is bounded (256 bytes for names and fingerprints). A longer name, fingerprint or
/// serial is dropped (read as absent), never cut: a cut value could equal a pin it does not
/// match.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientCertFacts {
    /// A certificate was presented (`certPresented` "1", `cf-cert-presented` true).
    pub presented: bool,
    /// Validation result.
    pub verified: Option<CertVerification>,
    /// `Some(true)` revoked, `Some(false)` explicitly not revoked, `None` unknown.
    pub revoked: Option<bool>,
    /// SHA-256 fingerprint, lowercase hex.
    pub fingerprint_sha256: Option<String>,
    /// Subject DN.
    pub subject_dn: Option<String>,
    /// Issuer DN.
    pub issuer_dn: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
}

const MAX_FIELD: usize = 256;

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

    fn from_fields<'a>(get: impl Fn(Field) -> Option<&'a str>) -> Self {
        let bounded = |f: Field| get(f).filter(|v| !v.is_empty() && v.len() <= MAX_FIELD).map(str::to_owned);
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
            fingerprint_sha256: bounded(Field::Fingerprint).map(|f| f.to_ascii_lowercase()),
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
            "certFingerprintSHA256" => Some("AB12"),
            _ => None,
        });
        assert!(f.presented);
        assert_eq!(f.verified, Some(CertVerification::Success));
        assert_eq!(f.revoked, Some(false));
        assert_eq!(f.fingerprint_sha256.as_deref(), Some("ab12"));
        assert_eq!(f.subject_dn, None);
        assert_eq!(ClientCertFacts::from_tls_client_auth(|_| None), ClientCertFacts::default());
    }
}
