//! Minting test tokens: keys, their public JWKs, and signed (or deliberately broken) tokens.
//! For keygate's tests, benchmarks and local experiments only — keygate itself never signs a
//! token. The keys are generated with ring (EC, Ed25519) or read from a PKCS#8 PEM (RSA: ring
//! cannot generate RSA keys).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use serde_json::{json, Value};

enum Signer {
    Rsa(signature::RsaKeyPair, bool),
    P256(signature::EcdsaKeyPair),
    P384(signature::EcdsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
}

/// A signing key with its `kid`.
pub struct Minter {
    kid: String,
    signer: Signer,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter").field("kid", &self.kid).finish()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a test key: {0}")]
pub struct MintError(String);

impl Minter {
    /// A new P-256 key (ES256).
    pub fn es256(kid: &str) -> Result<Minter, MintError> {
        Minter::ecdsa(
            kid,
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Signer::P256,
        )
    }

    /// A new P-384 key (ES384).
    pub fn es384(kid: &str) -> Result<Minter, MintError> {
        Minter::ecdsa(
            kid,
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Signer::P384,
        )
    }

    /// A new ECDSA key on `alg`'s curve, held as `signer`.
    fn ecdsa(
        kid: &str,
        alg: &'static signature::EcdsaSigningAlgorithm,
        signer: fn(signature::EcdsaKeyPair) -> Signer,
    ) -> Result<Minter, MintError> {
        let rng = SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng)
            .map_err(|e| MintError(e.to_string()))?;
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|e| MintError(e.to_string()))?;
        Ok(Minter {
            kid: kid.into(),
            signer: signer(pair),
        })
    }

    /// A new Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> Result<Minter, MintError> {
        let rng = SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|e| MintError(e.to_string()))?;
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| MintError(e.to_string()))?;
        Ok(Minter {
            kid: kid.into(),
            signer: Signer::Ed25519(pair),
        })
    }

    /// An RSA key from a PKCS#8 PEM; `pss` signs PS256, else RS256.
    pub fn rsa(kid: &str, pem: &[u8], pss: bool) -> Result<Minter, MintError> {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|e| MintError(e.to_string()))?;
        let pair = signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| MintError(e.to_string()))?;
        Ok(Minter {
            kid: kid.into(),
            signer: Signer::Rsa(pair, pss),
        })
    }

    /// The JOSE algorithm this key signs with.
    pub fn alg(&self) -> &'static str {
        match &self.signer {
            Signer::Rsa(_, false) => "RS256",
            Signer::Rsa(_, true) => "PS256",
            Signer::P256(_) => "ES256",
            Signer::P384(_) => "ES384",
            Signer::Ed25519(_) => "EdDSA",
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Rsa(pair, _) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::P256(pair) | Signer::P384(pair) => {
                let point = pair.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                let crv = if size == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "kid": self.kid, "crv": crv, "alg": self.alg(),
                       "x": b64(&point[1..1 + size]), "y": b64(&point[1 + size..])})
            }
            Signer::Ed25519(pair) => {
                json!({"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "alg": "EdDSA",
                       "x": b64(pair.public_key().as_ref())})
            }
        }
    }

    /// The raw public key bytes (what an attacker would use as an HMAC secret).
    pub fn public_bytes(&self) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(pair, _) => pair.public().as_ref().to_vec(),
            Signer::P256(pair) | Signer::P384(pair) => pair.public_key().as_ref().to_vec(),
            Signer::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    /// A token with the usual header (`alg`, `kid`, `typ`) and these claims.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    /// A token with an arbitrary header, signed with this key.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.signer {
            Signer::Rsa(pair, pss) => {
                let mut out = vec![0; pair.public().modulus_len()];
                let padding: &dyn signature::RsaEncoding = if *pss {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                // Signing with a valid key into a buffer of its modulus' size cannot fail.
                let _ = pair.sign(padding, &rng, input.as_bytes(), &mut out);
                out
            }
            Signer::P256(pair) | Signer::P384(pair) => pair
                .sign(&rng, input.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            Signer::Ed25519(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

/// An HS256 token signed with `secret`.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// An unsigned (`alg: none`) token.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A JWKS document with these keys' public halves.
pub fn jwks(minters: &[&Minter]) -> String {
    json!({"keys": minters.iter().map(|m| m.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
