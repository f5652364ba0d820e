//! The JWS algorithms Portcullis accepts, by their JOSE names.

use jsonwebtoken::Algorithm;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlgFamily {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn family(self) -> AlgFamily {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => AlgFamily::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => AlgFamily::Rsa,
            Alg::ES256 | Alg::ES384 => AlgFamily::Ec,
            Alg::EdDSA => AlgFamily::Ed,
        }
    }

    /// Minimum HMAC secret length in bytes (the hash length).
    pub fn hmac_min_secret(self) -> usize {
        match self {
            Alg::HS384 => 48,
            Alg::HS512 => 64,
            _ => 32,
        }
    }

    /// The EC curve name (`crv`) this algorithm needs.
    pub fn ec_curve(self) -> Option<&'static str> {
        match self {
            Alg::ES256 => Some("P-256"),
            Alg::ES384 => Some("P-384"),
            _ => None,
        }
    }

    pub fn to_jsonwebtoken(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::HS384 => Algorithm::HS384,
            Alg::HS512 => Algorithm::HS512,
            Alg::RS256 => Algorithm::RS256,
            Alg::RS384 => Algorithm::RS384,
            Alg::RS512 => Algorithm::RS512,
            Alg::PS256 => Algorithm::PS256,
            Alg::PS384 => Algorithm::PS384,
            Alg::PS512 => Algorithm::PS512,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl FromStr for Alg {
    type Err = ();
    /// Exact, case-sensitive JOSE names only: `none`, `None` and `rs256` are all unknown.
    fn from_str(s: &str) -> Result<Self, ()> {
        Alg::ALL.into_iter().find(|a| a.name() == s).ok_or(())
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
