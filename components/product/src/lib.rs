//! `product`: the Panal product service.
//!
//! Public (routed by the gateway under `/products`); writes need the `admin` role the
//! operator granted (`x-panal-roles`; 403 otherwise), whatever the route says:
//! - `POST /products {name, price_cents, stock}` → 201 product; 400 listing bad fields.
//! - `GET /products?limit=&cursor=` → 200 `{items, next_cursor}` in creation order
//!   (limit 1..=100, default 20).
//! - `GET /products/{id}` → 200 / 404.
//! - `PATCH /products/{id}` with any of the fields → 200 updated product.
//!
//! Internal (for the order service only; the gateway does not route `/internal`, and a
//! request without the host's `x-panal-caller` gets 403):
//! `POST /internal/reserve`, `POST /internal/release` and `POST /internal/keep`, see
//! [`stock`].
//!
//! Storage: bucket `products`, key layout in [`model`].

mod model;
mod stock;

use panal_sdk::keyvalue::atomics;
use panal_sdk::keyvalue::batch;
use panal_sdk::keyvalue::store::{self, Bucket};
use panal_sdk::kv::{self, Step};
use panal_sdk::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use panal_sdk::{ApiError, ApiResult};
use serde_json::{json, Value};

use model::{Product, SEQ_KEY};

const BUCKET: &str = "products";

/// The role that may change the catalogue.
const ADMIN: &str = "admin";

struct ProductService;

panal_sdk::wasi::http::proxy::export!(ProductService);

impl panal_sdk::wasi::exports::http::incoming_handler::Guest for ProductService {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        panal_sdk::reply(out, route(&request));
    }
}

fn route(req: &IncomingRequest) -> ApiResult {
    let (path, query) = panal_sdk::path_and_query(req);
    let segments = panal_sdk::path_segments(&path);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["products"]) => {
            panal_sdk::require_role(req, ADMIN)?;
            create(req)
        }
        (Method::Get, ["products"]) => list(query.as_deref()),
        (Method::Get, ["products", id]) => get(id),
        (Method::Patch, ["products", id]) => {
            panal_sdk::require_role(req, ADMIN)?;
            patch(req, id)
        }
        (Method::Post, ["internal", "reserve"]) => {
            panal_sdk::require_component(req)?;
            let request = stock::parse(&read_body(req)?)?;
            stock::reserve(&open()?, &request)
        }
        (Method::Post, ["internal", "release"]) => {
            panal_sdk::require_component(req)?;
            let request = stock::parse(&read_body(req)?)?;
            stock::release(&open()?, &request)
        }
        (Method::Post, ["internal", "keep"]) => {
            panal_sdk::require_component(req)?;
            let request = stock::parse(&read_body(req)?)?;
            stock::keep(&open()?, &request)
        }
        (_, ["products"] | ["products", _] | ["internal", "reserve" | "release" | "keep"]) => {
            Err(ApiError::method_not_allowed())
        }
        _ => Err(ApiError::no_route()),
    }
}

fn open() -> Result<Bucket, ApiError> {
    Ok(store::open(BUCKET)?)
}

fn read_body(req: &IncomingRequest) -> Result<Vec<u8>, ApiError> {
    panal_sdk::read_body(req)
        .map_err(|e| ApiError::bad_request("could not read request body").with("detail", e))
}

fn not_found() -> ApiError {
    ApiError::not_found("product not found")
}

/// The key of the record of product `id`, if it exists.
fn record_key(bucket: &Bucket, id: &str) -> Result<Option<String>, ApiError> {
    if !panal_sdk::is_id(id) {
        return Ok(None);
    }
    let Some(seq) = bucket.get(&model::id_key(id))? else {
        return Ok(None);
    };
    let seq = std::str::from_utf8(&seq)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| ApiError::internal("corrupt product index"))?;
    Ok(Some(model::product_key(seq)))
}

fn create(req: &IncomingRequest) -> ApiResult {
    let fields = model::create_fields(&read_body(req)?)?;
    let bucket = open()?;
    let product = Product {
        id: panal_sdk::random_id(),
        name: fields.name.unwrap_or_default(),
        price_cents: fields.price_cents.unwrap_or_default(),
        stock: fields.stock.unwrap_or_default(),
        created_at: panal_sdk::time::now_rfc3339(),
        holds: Vec::new(),
    };
    let seq = atomics::increment(&bucket, SEQ_KEY, 1)?;
    let seq = u64::try_from(seq).map_err(|_| ApiError::internal("bad product counter"))?;
    // Record first, then the id mapping: a listing may show the product a moment before
    // GET by id finds it, never an id pointing at nothing.
    bucket.set(&model::product_key(seq), &product.to_bytes()?)?;
    bucket.set(&model::id_key(&product.id), seq.to_string().as_bytes())?;
    Ok((201, product.public()))
}

fn get(id: &str) -> ApiResult {
    let bucket = open()?;
    let key = record_key(&bucket, id)?.ok_or_else(not_found)?;
    let bytes = bucket.get(&key)?.ok_or_else(not_found)?;
    Ok((200, Product::from_bytes(&bytes)?.public()))
}

fn patch(req: &IncomingRequest, id: &str) -> ApiResult {
    let fields = model::patch_fields(&read_body(req)?)?;
    let bucket = open()?;
    let key = record_key(&bucket, id)?.ok_or_else(not_found)?;
    // CAS, like reservations, so a stock PATCH and a reservation never overwrite each other.
    let updated = kv::update(&bucket, &key, |current| {
        let mut product = Product::from_bytes(current.ok_or_else(not_found)?)?;
        fields.apply(&mut product);
        Ok(Step::Write(product.to_bytes()?, product))
    })
    .map_err(ApiError::from)?;
    Ok((200, updated.public()))
}

/// Walks seqs after the cursor up to the counter, skipping seqs whose creation failed or
/// is still under way, and fetches one extra product to learn whether a next page exists.
fn list(query: Option<&str>) -> ApiResult {
    let params = model::list_params(
        panal_sdk::query_param(query, "limit").as_deref(),
        panal_sdk::query_param(query, "cursor").as_deref(),
    )?;
    let bucket = open()?;
    let last = kv::parse_counter(bucket.get(SEQ_KEY)?.as_deref())
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| ApiError::internal("bad product counter"))?;
    let mut found: Vec<(u64, Product)> = Vec::new();
    let mut next = params.after.saturating_add(1);
    while found.len() <= params.limit && next <= last {
        let want = (params.limit + 1 - found.len()) as u64;
        let end = last.min(next.saturating_add(want - 1));
        let keys: Vec<String> = (next..=end).map(model::product_key).collect();
        for (key, bytes) in batch::get_many(&bucket, &keys)?.into_iter().flatten() {
            if let Some(seq) = model::seq_of_key(&key) {
                found.push((seq, Product::from_bytes(&bytes)?));
            }
        }
        next = end.saturating_add(1);
    }
    found.sort_by_key(|(seq, _)| *seq);
    let more = found.len() > params.limit;
    found.truncate(params.limit);
    let next_cursor = match found.last() {
        Some((seq, _)) if more => Value::String(model::encode_cursor(*seq)),
        _ => Value::Null,
    };
    let items: Vec<Value> = found.iter().map(|(_, p)| p.public()).collect();
    Ok((200, json!({ "items": items, "next_cursor": next_cursor })))
}
