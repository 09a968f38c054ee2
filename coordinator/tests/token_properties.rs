//! Tokens face the network: whatever arrives as a bearer or an attach token, verification
//! answers with a refusal and never panics, and a changed byte never passes.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use fogshell_coordinator::auth::attach::AttachTokens;
use fogshell_coordinator::auth::oidc::{OidcConfig, OidcVerifier};
use fogshell_shared::{SessionId, Timestamp};
use proptest::prelude::*;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms).unwrap()
}

/// Strings shaped like JWTs: three base64url parts whose JSON may name any algorithm and key.
fn jwt_like() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        Just("RS256"),
        Just("ES256"),
        Just("EdDSA"),
        Just("HS256"),
        Just("none"),
        Just("PS256"),
        Just(""),
    ];
    (
        alg,
        ".{0,12}",
        any::<i64>(),
        ".{0,40}",
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(alg, kid, exp, sub, signature)| {
            let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
            let claims = serde_json::json!({"sub": sub, "exp": exp, "aud": "fogshell", "iss": "http://127.0.0.1:9"});
            format!(
                "{}.{}.{}",
                B64.encode(header.to_string()),
                B64.encode(claims.to_string()),
                B64.encode(signature)
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn attach_token_verification_refuses_anything_made_up(token in ".{0,300}", jwt in jwt_like()) {
        let tokens = AttachTokens::new(Duration::from_secs(60), at(0)).unwrap();
        let session = SessionId::from_random_bytes([7; 16]);
        prop_assert!(tokens.verify(&token, session, at(1)).is_err());
        prop_assert!(tokens.verify(&jwt, session, at(1)).is_err());
        for version in ["fsa1", "fsa2"] {
            let prefixed = format!("{version}.{token}");
            prop_assert!(tokens.verify(&prefixed, session, at(1)).is_err());
        }
    }

    #[test]
    fn a_changed_attach_token_never_passes(position in any::<prop::sample::Index>(), replacement in any::<char>()) {
        let tokens = AttachTokens::new(Duration::from_secs(60), at(0)).unwrap();
        let session = SessionId::from_random_bytes([7; 16]);
        let node: fogshell_shared::NodeId = "fog-a".parse().unwrap();
        let (token, _) = tokens.mint(session, &node, at(0)).unwrap();
        let mut chars: Vec<char> = token.chars().collect();
        let i = position.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let changed: String = chars.into_iter().collect();
        prop_assert!(tokens.verify(&changed, session, at(1)).is_err());
        // Nor at the node's own gateway, which checks offline with the published keys.
        prop_assert!(fogshell_shared::attach_token::verify(&changed, &tokens.keys(), session, Some(&node), at(1)).is_err());
    }
}

#[test]
fn access_token_verification_refuses_anything_made_up() {
    // An issuer nobody serves: the first unknown key costs one failed fetch, then the
    // refetch limit keeps the rest from touching the network.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let verifier = OidcVerifier::new(
        OidcConfig::new("http://127.0.0.1:9", "fogshell"),
        reqwest::Client::new(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
    runner
        .run(&(".{0,200}", jwt_like()), |(token, jwt)| {
            runtime.block_on(async {
                prop_assert!(verifier.verify(&token).await.is_err());
                prop_assert!(verifier.verify(&jwt).await.is_err());
                Ok(())
            })
        })
        .unwrap();
}
