//! Makes the JWT fixtures of `benches/keygate-bench-jwt.toml`: a fresh ES256 key, its public JWKS
//! (`benches/bench-jwks.json`) and one long-lived token for it (`benches/bench-jwt.txt`), whose
//! `sub` the bench config maps to the bench caller `u-bench01`. The private key is not kept.
//!
//! `cargo run --example bench_jwt -- benches` (re-run to rotate; the token expires in 2036).

#![allow(
    clippy::unwrap_used,
    reason = "a fixture generator: any failure should abort it"
)]

use keygate::identity::jwt::mint::{self, Minter};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "benches".into());
    let minter = Minter::es256("bench-es256").unwrap();
    let claims = serde_json::json!({
        "iss": "https://idp.bench.example",
        "aud": "keygate",
        "sub": "repo:acme/bench:ref:refs/heads/main",
        "repository": "acme/bench",
        "repository_owner": "acme",
        "ref": "refs/heads/main",
        "workflow": "bench",
        "iat": 1_767_225_600,
        "exp": 2_082_758_400,
    });
    let token = minter.sign(&claims);
    let dir = std::path::Path::new(&dir);
    std::fs::write(dir.join("bench-jwks.json"), mint::jwks(&[&minter]) + "\n").unwrap();
    std::fs::write(dir.join("bench-jwt.txt"), format!("{token}\n")).unwrap();
    println!(
        "{} bytes of token written to {}",
        token.len(),
        dir.display()
    );
}
