//! `user`: the Panal user service.
//!
//! - `POST /users {email, name, password}` → 201 `{id, email, name}`; 409 for an email
//!   already registered (case-insensitive); 400 listing bad fields.
//! - `POST /users/login {email, password}` → 200 `{token, expires_at}` (unix seconds;
//!   the token carries `sub`, `email`, `iat` and `exp`); 401 for any wrong credential;
//!   429 with `Retry-After` for an address that failed too often on the account, see
//!   [`guard`].
//! - `GET /users/me` → the caller named by `x-panal-user-id` (401 without it), with
//!   `roles`: what the operator granted it (`x-panal-roles`; `panal roles grant`). No
//!   request to this service leads to a role.
//! - `GET /users/{id}` → 200 `{id, email, name}` or 404.
//!
//! Storage (bucket `users`): `user:<id>` → the user record (JSON, with the Argon2id PHC
//! hash), `email:<lowercased email>` → the same record (the owning user id alone in
//! records from before). The email key is claimed with a compare-and-swap from absent
//! whose value is the whole record, so two concurrent registrations of one email cannot
//! both succeed, and a registration whose second write failed (storage lost mid-way, a
//! host stopped) is still whole: login reads it from the claim and writes `user:<id>`
//! back.
//!
//! Config: `jwt_secret` (required for login), `jwt_ttl_secs` (default 3600).

mod guard;
mod jwt;
mod password;
mod validate;

use panal_sdk::config::store as config;
use panal_sdk::keyvalue::store::{self, Bucket};
use panal_sdk::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use panal_sdk::{kv, ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const BUCKET: &str = "users";
const DEFAULT_TTL_SECS: u64 = 3600;

/// The stored user. `password_hash` never leaves the service: responses use [`User::public`].
#[derive(Debug, Serialize, Deserialize)]
struct User {
    id: String,
    email: String,
    name: String,
    password_hash: String,
    created_at: String,
}

impl User {
    fn public(&self) -> Value {
        json!({ "id": self.id, "email": self.email, "name": self.name })
    }
}

struct UserService;

panal_sdk::wasi::http::proxy::export!(UserService);

impl panal_sdk::wasi::exports::http::incoming_handler::Guest for UserService {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        panal_sdk::reply(out, route(&request));
    }
}

fn route(req: &IncomingRequest) -> ApiResult {
    let (path, _) = panal_sdk::path_and_query(req);
    let segments = panal_sdk::path_segments(&path);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["users"]) => register(req),
        (Method::Post, ["users", "login"]) => login(req),
        (Method::Get, ["users", "me"]) => me(req),
        (Method::Get, ["users", id]) => get_by_id(id),
        (_, ["users"] | ["users", _]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::no_route()),
    }
}

fn open() -> Result<Bucket, ApiError> {
    Ok(store::open(BUCKET)?)
}

fn user_key(id: &str) -> String {
    format!("user:{id}")
}

fn load_user(bucket: &Bucket, id: &str) -> Result<Option<User>, ApiError> {
    match bucket.get(&user_key(id))? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ApiError::internal("corrupt user record").with("detail", e.to_string())),
    }
}

/// The user an `email:` claim names: the record it holds, written back to `user:<id>`
/// when that write of its registration failed; or, in a claim from before claims held
/// the record, the user under the id it holds.
fn user_of_claim(bucket: &Bucket, claim: &[u8]) -> Result<Option<User>, ApiError> {
    let Ok(user) = serde_json::from_slice::<User>(claim) else {
        return load_user(bucket, &String::from_utf8_lossy(claim));
    };
    if !bucket.exists(&user_key(&user.id))? {
        bucket.set(&user_key(&user.id), claim)?;
    }
    Ok(Some(user))
}

fn read_body(req: &IncomingRequest) -> Result<Vec<u8>, ApiError> {
    panal_sdk::read_body(req)
        .map_err(|e| ApiError::bad_request("could not read request body").with("detail", e))
}

fn register(req: &IncomingRequest) -> ApiResult {
    let reg = validate::registration(&read_body(req)?)?;
    let bucket = open()?;
    let email_key = validate::email_key(&reg.email);
    // Cheap early answer for the common duplicate; the claim below is what decides.
    if bucket.exists(&email_key)? {
        return Err(email_taken());
    }
    let salt = panal_sdk::random::random_bytes(16);
    let password_hash = password::hash(&reg.password, &salt)
        .map_err(|e| ApiError::internal("password hashing failed").with("detail", e))?;
    let user = User {
        id: panal_sdk::random_id(),
        email: reg.email,
        name: reg.name,
        password_hash,
        created_at: panal_sdk::time::now_rfc3339(),
    };
    let record = serde_json::to_vec(&user).map_err(|e| ApiError::internal(e.to_string()))?;
    if kv::claim(&bucket, &email_key, &record)?.is_some() {
        return Err(email_taken());
    }
    // The claim is the registration; a failure here answers "unsure" (the retry gets
    // 409, and login writes the record back).
    bucket.set(&user_key(&user.id), &record)?;
    Ok((201, user.public()))
}

fn email_taken() -> ApiError {
    ApiError::conflict("email already registered")
}

fn login(req: &IncomingRequest) -> ApiResult {
    let (email, password) = validate::login(&read_body(req)?)?;
    // Configuration problems surface before any password work.
    let secret = jwt_secret()?;
    let ttl = jwt_ttl()?;
    let bucket = open()?;
    let user = match bucket.get(&validate::email_key(&email))? {
        Some(claim) => user_of_claim(&bucket, &claim)?,
        None => None,
    };
    let client = guard::client_of(panal_sdk::header(req, panal_sdk::CLIENT_IP_HEADER).as_deref());
    let now = panal_sdk::time::unix_now();
    let user = match user {
        Some(user) => {
            // Before any password work: a held-back address costs nothing.
            guard::check(&bucket, &user.id, &client, now)?;
            if !password::verify(&password, &user.password_hash) {
                guard::failed(&bucket, &user.id, &client, now)?;
                return Err(bad_credentials());
            }
            guard::succeeded(&bucket, &user.id, &client)?;
            user
        }
        None => {
            // Same cost as a wrong password, so timing does not reveal unknown emails.
            let _ = password::verify(&password, password::DUMMY_HASH);
            return Err(bad_credentials());
        }
    };
    let iat = panal_sdk::time::unix_now();
    let exp = iat.saturating_add(ttl);
    let claims = jwt::Claims {
        sub: &user.id,
        email: &user.email,
        iat,
        exp,
    };
    let token = jwt::encode(&claims, secret.as_bytes())
        .map_err(|e| ApiError::internal("token signing failed").with("detail", e))?;
    Ok((200, json!({ "token": token, "expires_at": exp })))
}

fn bad_credentials() -> ApiError {
    ApiError::unauthorized("invalid email or password")
}

fn config_value(key: &str) -> Result<Option<String>, ApiError> {
    config::get(key).map_err(|e| {
        let detail = match e {
            config::Error::Upstream(s) | config::Error::Io(s) => s,
        };
        ApiError::internal("config unavailable").with("detail", detail)
    })
}

fn jwt_secret() -> Result<String, ApiError> {
    match config_value("jwt_secret")? {
        Some(secret) if !secret.is_empty() => Ok(secret),
        _ => Err(ApiError::internal(
            "server misconfigured: config key jwt_secret is not set",
        )),
    }
}

fn jwt_ttl() -> Result<u64, ApiError> {
    match config_value("jwt_ttl_secs")? {
        None => Ok(DEFAULT_TTL_SECS),
        Some(text) => match text.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ApiError::internal(
                "server misconfigured: config key jwt_ttl_secs must be a positive integer",
            )),
        },
    }
}

fn me(req: &IncomingRequest) -> ApiResult {
    let id = panal_sdk::require_caller(req)?;
    match load_user(&open()?, &id)? {
        Some(user) => {
            let mut me = user.public();
            me["roles"] = json!(panal_sdk::caller_roles(req));
            Ok((200, me))
        }
        None => Err(ApiError::not_found("user not found")),
    }
}

fn get_by_id(id: &str) -> ApiResult {
    if !panal_sdk::is_id(id) {
        return Err(ApiError::not_found("user not found"));
    }
    match load_user(&open()?, id)? {
        Some(user) => Ok((200, user.public())),
        None => Err(ApiError::not_found("user not found")),
    }
}
