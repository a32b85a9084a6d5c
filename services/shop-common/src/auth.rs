//! HS256 JWTs (mint and verify) with a secret from `JWT_SECRET`, Bearer extraction, and argon2
//! password hashes.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::http::ApiError;

/// Environment variable holding the shared HS256 secret.
pub const JWT_SECRET_ENV: &str = "JWT_SECRET";

/// Role of shop administrators.
pub const ROLE_ADMIN: &str = "admin";
/// Role of everyone else.
pub const ROLE_CUSTOMER: &str = "customer";
/// Role of the shop's own services calling each other (the cart service reserving stock at the
/// backend): minted by the calling service with the shared secret, never given to a user.
pub const ROLE_SERVICE: &str = "service";

/// What a token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The username.
    pub username: String,
    /// `customer` or `admin`.
    pub role: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

impl Claims {
    /// Whether the bearer is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == ROLE_ADMIN
    }

    /// Whether the bearer may act for any user: an admin, or one of the shop's services.
    pub fn acts_for_anyone(&self) -> bool {
        self.role == ROLE_ADMIN || self.role == ROLE_SERVICE
    }
}

/// Why a token was refused. The message is safe to show to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenError(pub String);

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

/// The HS256 keys of a service. Every service must use the same secret, or tokens minted by
/// the user service are refused by the others.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys for `secret`; tokens minted live `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        // A token is good until `exp`, to the second: the services share one clock source.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// Keys from `secret` (the value of `JWT_SECRET`). When it is unset or empty, a random
    /// secret for this process only, with a loud warning: tokens then die with the process and
    /// are refused by every other service, which is fine for a quick try and wrong for anything
    /// else.
    pub fn from_secret_or_random(secret: Option<&str>, ttl: Duration) -> JwtKeys {
        match secret {
            Some(secret) if !secret.trim().is_empty() => JwtKeys::new(secret.trim().as_bytes(), ttl),
            _ => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).expect("the OS random number generator is available");
                tracing::warn!(
                    setting = JWT_SECRET_ENV,
                    "not set: using a random secret for this process only; tokens will not survive a \
                     restart and the other services will refuse them (set it to the same value for \
                     every service)"
                );
                JwtKeys::new(&secret, ttl)
            }
        }
    }

    /// How long minted tokens live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed token for a user.
    pub fn mint(&self, user_id: &str, username: &str, role: &str) -> Result<String, TokenError> {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            username: username.to_string(),
            role: role.to_string(),
            iat,
            exp: iat + self.ttl.as_secs(),
        };
        self.mint_claims(&claims)
    }

    /// A signed token with exactly these claims (tests use it for expired tokens).
    pub fn mint_claims(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError(format!("could not sign the token: {e}")))
    }

    /// The claims of a valid token: signed with this secret, HS256 only (no `none`, no
    /// algorithm confusion), not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                TokenError(
                    match e.kind() {
                        ErrorKind::ExpiredSignature => "the token has expired",
                        ErrorKind::InvalidSignature => "the token's signature is not valid",
                        ErrorKind::InvalidAlgorithm => "the token is not signed with HS256",
                        _ => "the token is malformed",
                    }
                    .to_string(),
                )
            })
    }

    /// The claims of the request's `Authorization: Bearer` token; 401 when it is missing,
    /// malformed, expired or forged.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let value = headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("a Bearer token is required"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        self.verify(token).map_err(|e| ApiError::unauthorized(e.0))
    }

    /// Like [`JwtKeys::authenticate`], then 403 unless the bearer is an admin.
    pub fn require_admin(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let claims = self.authenticate(headers)?;
        if !claims.is_admin() {
            return Err(ApiError::forbidden("this call is for administrators"));
        }
        Ok(claims)
    }

    /// Like [`JwtKeys::authenticate`], then 403 unless the bearer's role is one of `roles`.
    pub fn require_role(&self, headers: &HeaderMap, roles: &[&str]) -> Result<Claims, ApiError> {
        let claims = self.authenticate(headers)?;
        if !roles.contains(&claims.role.as_str()) {
            return Err(ApiError::forbidden(format!(
                "this call is for the roles {}",
                roles.join(", ")
            )));
        }
        Ok(claims)
    }
}

/// Environment variable that makes a Bearer token mandatory on every cart and order call
/// (`true`/`false`; default `false`, so that the seed's load test, which sends no token, works).
pub const REQUIRE_AUTH_ENV: &str = "SHOP_REQUIRE_AUTH";

/// Parses [`REQUIRE_AUTH_ENV`]: unset or blank is `false`; `true`/`1`/`yes`/`on` and
/// `false`/`0`/`no`/`off` in any case; anything else is `true` with a warning, since a typo
/// in a security setting must not leave the shop open.
///
/// ```
/// use shop_common::auth::require_auth_from;
/// assert!(!require_auth_from(None));
/// assert!(require_auth_from(Some(" TRUE ")));
/// assert!(!require_auth_from(Some("off")));
/// assert!(require_auth_from(Some("ture")));
/// ```
pub fn require_auth_from(raw: Option<&str>) -> bool {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return false;
    };
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => true,
        "false" | "0" | "no" | "off" => false,
        _ => {
            tracing::warn!(
                setting = REQUIRE_AUTH_ENV,
                value = raw,
                "neither true nor false; requiring tokens"
            );
            true
        }
    }
}

/// Who may act on a user's carts and orders: the one place where the cart and order services
/// decide it, called first thing by each of their handlers.
///
/// A Bearer token, when one is sent, must be valid (401 otherwise) and name the user the call
/// is about (403 otherwise); admins and the shop's own services (role `service`) may act for
/// anyone. Without a token the call is let through unless `require_auth` is set (401 then):
/// the default stays open for the seed's load test, which sends none.
#[derive(Clone, Debug)]
pub struct OwnerGuard {
    keys: JwtKeys,
    require_auth: bool,
}

impl OwnerGuard {
    /// A guard verifying tokens with `keys`; `require_auth` makes a token mandatory.
    pub fn new(keys: JwtKeys, require_auth: bool) -> OwnerGuard {
        OwnerGuard { keys, require_auth }
    }

    /// Whether a token is mandatory.
    pub fn requires_auth(&self) -> bool {
        self.require_auth
    }

    /// The caller's claims when a token is sent (`None` when none is and none is required);
    /// 401 when the token is bad, or missing while required. For calls whose owner is known
    /// only after a lookup: check the caller first, then [`OwnerGuard::may_act_for`].
    pub fn caller(&self, headers: &HeaderMap) -> Result<Option<Claims>, ApiError> {
        if headers.contains_key(AUTHORIZATION) || self.require_auth {
            self.keys.authenticate(headers).map(Some)
        } else {
            Ok(None)
        }
    }

    /// 403 unless `caller` (if any) is `user_id`, an admin or a service.
    pub fn may_act_for(caller: Option<&Claims>, user_id: &str) -> Result<(), ApiError> {
        match caller {
            Some(claims) if claims.sub != user_id && !claims.acts_for_anyone() => Err(ApiError::forbidden(
                "the token does not name the user this call is about",
            )),
            _ => Ok(()),
        }
    }

    /// [`OwnerGuard::caller`] then [`OwnerGuard::may_act_for`]: the check of every call whose
    /// path (or body) names its user.
    pub fn owner(&self, headers: &HeaderMap, user_id: &str) -> Result<Option<Claims>, ApiError> {
        let caller = self.caller(headers)?;
        OwnerGuard::may_act_for(caller.as_ref(), user_id)?;
        Ok(caller)
    }

    /// A valid admin token, always (whatever `require_auth` says): 401 without or with a bad
    /// one, 403 for any other role.
    pub fn admin(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        self.keys.require_admin(headers)
    }
}

/// Why a password could not be hashed.
#[derive(Debug)]
pub struct HashError(String);

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "password hashing failed: {}", self.0)
    }
}

impl std::error::Error for HashError {}

/// Hashes a password with argon2id (default parameters, a fresh random salt) into a PHC
/// string. Slow by design (tens of milliseconds): call it on the blocking pool.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches `hash` (a PHC string); a malformed hash never matches.
/// Slow by design: call it on the blocking pool.
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Verifies `password` against the user's hash, or against a fixed dummy hash when there is no
/// such user, so that "unknown user" and "wrong password" take the same time and a client
/// cannot probe for usernames. Always false without a user.
pub fn verify_password_or_dummy(password: &str, hash: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    match hash {
        Some(hash) => verify_password(password, hash),
        None => {
            let dummy = DUMMY.get_or_init(|| hash_password("not the password of anyone").unwrap_or_default());
            let _ = verify_password(password, dummy);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(b"test secret", Duration::from_secs(60))
    }

    #[test]
    fn minted_tokens_verify_and_forged_ones_do_not() {
        let token = keys().mint("u1", "ann", ROLE_ADMIN).unwrap();
        let claims = keys().verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.is_admin()), ("u1", true));

        let other = JwtKeys::new(b"another secret", Duration::from_secs(60));
        assert_eq!(
            other.verify(&token).unwrap_err().0,
            "the token's signature is not valid"
        );
        assert!(keys().verify("not.a.token").is_err());
        assert!(keys().verify("").is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let now = jsonwebtoken::get_current_timestamp();
        let token = keys()
            .mint_claims(&Claims {
                sub: "u1".into(),
                username: "ann".into(),
                role: ROLE_CUSTOMER.into(),
                iat: now - 120,
                exp: now - 60,
            })
            .unwrap();
        assert_eq!(keys().verify(&token).unwrap_err().0, "the token has expired");
    }

    #[test]
    fn bearer_header_is_required_and_admin_is_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(keys().authenticate(&headers).unwrap_err().status, 401);
        headers.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(keys().authenticate(&headers).unwrap_err().status, 401);
        let customer = keys().mint("u2", "bob", ROLE_CUSTOMER).unwrap();
        headers.insert(AUTHORIZATION, format!("Bearer {customer}").parse().unwrap());
        assert!(keys().authenticate(&headers).is_ok());
        assert_eq!(keys().require_admin(&headers).unwrap_err().status, 403);
    }

    #[test]
    fn require_role_accepts_only_the_roles_given() {
        let mut headers = HeaderMap::new();
        let roles = [ROLE_SERVICE, ROLE_ADMIN];
        assert_eq!(keys().require_role(&headers, &roles).unwrap_err().status, 401);
        for (role, status) in [(ROLE_SERVICE, 200), (ROLE_ADMIN, 200), (ROLE_CUSTOMER, 403)] {
            let token = keys().mint("s1", "cart-service", role).unwrap();
            headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
            let got = keys().require_role(&headers, &roles).map(|c| c.role);
            match got {
                Ok(r) => assert_eq!((r.as_str(), status), (role, 200)),
                Err(e) => assert_eq!(e.status, status),
            }
        }
    }

    #[test]
    fn the_owner_guard_binds_tokens_to_their_user() {
        let with = |token: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
            headers
        };
        let status =
            |r: Result<Option<Claims>, ApiError>| r.map(|_| 200).unwrap_or_else(|e| e.status.as_u16());
        let ann = with(&keys().mint("ann", "ann", ROLE_CUSTOMER).unwrap());
        let admin = with(&keys().mint("root", "root", ROLE_ADMIN).unwrap());
        let service = with(&keys().mint("cart-service", "cart-service", ROLE_SERVICE).unwrap());
        let forged = with(
            &JwtKeys::new(b"other", Duration::from_secs(60))
                .mint("ann", "ann", ROLE_ADMIN)
                .unwrap(),
        );
        for require_auth in [false, true] {
            let guard = OwnerGuard::new(keys(), require_auth);
            assert_eq!(status(guard.owner(&ann, "ann")), 200);
            assert_eq!(status(guard.owner(&ann, "bob")), 403);
            assert_eq!(status(guard.owner(&admin, "bob")), 200);
            assert_eq!(status(guard.owner(&service, "bob")), 200);
            assert_eq!(status(guard.owner(&forged, "ann")), 401);
            let anonymous = status(guard.owner(&HeaderMap::new(), "ann"));
            assert_eq!(anonymous, if require_auth { 401 } else { 200 });
            assert_eq!(guard.admin(&HeaderMap::new()).unwrap_err().status, 401);
            assert_eq!(guard.admin(&ann).unwrap_err().status, 403);
            assert_eq!(guard.admin(&service).unwrap_err().status, 403);
            assert!(guard.admin(&admin).is_ok());
        }
    }

    #[test]
    fn passwords_hash_with_salt_and_verify() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong horse", &a));
        assert!(!verify_password("correct horse", "garbage"));
        assert!(verify_password_or_dummy("correct horse", Some(&a)));
        assert!(!verify_password_or_dummy("correct horse", None));
    }
}
