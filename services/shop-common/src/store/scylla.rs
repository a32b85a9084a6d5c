//! The production backend: Cassandra or ScyllaDB over CQL, through the `scylla` driver.
//!
//! Chosen by configuration ([`ScyllaConfig::from_values`], read by the service kit): `SCYLLA_NODES=host:9042,host2:9042`
//! names the contact points, `SCYLLA_KEYSPACE` the keyspace (`store`), and
//! `SCYLLA_REPLICATION_FACTOR` its replication factor (1, `SimpleStrategy`). The keyspace and
//! the tables are created when missing; every statement is prepared once, when the store
//! opens.
//!
//! # Schema
//!
//! CQL answers only lookups by partition key efficiently, so every lookup the [`super::Store`]
//! interface needs has a table partitioned by its key, and no statement uses
//! `ALLOW FILTERING`:
//!
//! | table | primary key | serves |
//! | --- | --- | --- |
//! | `products` | `(id)` | a product; its stock (changed only by LWT) |
//! | `products_by_name` | `((bucket), name, id)` | the catalogue sorted by name, then id |
//! | `products_by_category` | `((category), name, id)` | one category sorted by name, then id |
//! | `categories` | `((bucket), name)` | the sorted category names; whether one exists |
//! | `users` | `(id)` | a user |
//! | `users_by_username` | `(username)` | login by name; uniqueness (LWT `IF NOT EXISTS`) |
//! | `users_by_email` | `(email)` | uniqueness of e-mail addresses (LWT `IF NOT EXISTS`) |
//! | `cart_items` | `((user_id), product_id)` | a cart, sorted by product id |
//! | `cart_activity` | `(user_id)` | when a cart last changed; whether it was counted abandoned (LWT) |
//! | `idle_carts` | `((bucket), last_activity, user_id)` | carts not yet counted, idlest first |
//! | `orders` | `(id)` | an order, its items and status history (status changed by LWT) |
//! | `orders_by_user` | `((user_id), created_at DESC, id)` | a user's orders, newest first |
//! | `orders_by_status` | `((status), created_at, id)` | orders in a status, oldest first |
//!
//! `bucket` is always 0: the whole catalogue (and the category list) is one partition, which
//! is what a sorted listing over all products needs and stays small for a shop's catalogue.
//! Usernames and e-mail addresses are keyed in ASCII lower case, so that, as in the SQLite
//! store, they are unique and found whatever their case.
//!
//! The `*_by_*` tables hold keys only; the rows themselves are read from `products` and
//! `orders` (in parallel), so that stock and status have one copy each. Those two tables (and
//! `cart_activity`) are written only through lightweight transactions (Paxos), which is what
//! makes compare-and-set on them safe: stock changes are `UPDATE products SET stock = ? WHERE id = ? IF stock = ?`,
//! retried on contention with the current value the failed attempt returns; a status change
//! is `... IF status = ?` and reports [`StoreError::Stale`] when another writer got there
//! first; an abandoned cart is claimed with `... IF last_activity = ? AND abandoned = false`,
//! so that it is counted once per idle period however many sweepers run. A multi-line stock
//! decrement takes line after line and gives back what it took when
//! a later line fails, so that it is all or nothing as seen from its caller.
//!
//! Index rows are written before the row they point to (a crash in between leaves an index
//! entry that readers skip, never a row that cannot be found) and moved in logged batches.
//!
//! On ScyllaDB the keyspace is created with tablets disabled (lightweight transactions need
//! vnode keyspaces on several ScyllaDB releases); Cassandra, which knows no such option, gets
//! the plain statement.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::deserialize::row::DeserializeRow;
use ::scylla::response::query_result::QueryResult;
use ::scylla::response::PagingState;
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::value::{CqlValue, Row};

use super::{
    CartActivity, CartItem, NewProduct, Order, OrderItem, Product, ProductUpdate, StatusChange, StoreError,
    User,
};

/// Environment variable naming the contact points (`host:port,host:port`); unset or empty
/// selects the embedded SQLite store.
pub const NODES_ENV: &str = "SCYLLA_NODES";
/// Environment variable naming the keyspace (default [`DEFAULT_KEYSPACE`]).
pub const KEYSPACE_ENV: &str = "SCYLLA_KEYSPACE";
/// Environment variable giving the keyspace's replication factor (default 1).
pub const REPLICATION_FACTOR_ENV: &str = "SCYLLA_REPLICATION_FACTOR";
/// The keyspace when `SCYLLA_KEYSPACE` is not set.
pub const DEFAULT_KEYSPACE: &str = "store";
/// The CQL native protocol port, used when a node is given without one.
pub const DEFAULT_PORT: u16 = 9042;

/// How long connecting to one node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening the whole session (contact, topology and schema metadata) may take,
/// unless [`ScyllaConfig::open_timeout`] says otherwise.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request may take, retries included, before the driver gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries of `idle_carts` read per page when looking for abandoned carts, and the most pages
/// one claim reads (carts whose lines are gone stay listed, as they stay in the SQLite store).
const IDLE_PAGE: i32 = 100;
const IDLE_PAGES: usize = 100;
/// Compare-and-set attempts on one row before contention is reported as a failure. Every
/// round lets at least one contender through, so this is far above what the shop's own
/// concurrency needs.
const CAS_ATTEMPTS: u32 = 200;

/// Where and how to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` each.
    pub nodes: Vec<String>,
    /// The keyspace of the shop's tables (lower case, created if missing).
    pub keyspace: String,
    /// Replication factor of the keyspace when this store creates it.
    pub replication_factor: u32,
    /// How long connecting may take in all ([`OPEN_TIMEOUT`]); one node gets at most 5 s.
    pub open_timeout: Duration,
}

impl ScyllaConfig {
    /// The configuration from the values of `SCYLLA_NODES`, `SCYLLA_KEYSPACE` and
    /// `SCYLLA_REPLICATION_FACTOR` (blank ones count as unset): `None` when no nodes are named
    /// (the SQLite store is meant), an error when a value is malformed. The service kit reads
    /// them once, with the rest of the configuration (`shop_common::service::StoreChoice`).
    pub fn from_values(
        nodes: Option<&str>,
        keyspace: Option<&str>,
        replication_factor: Option<&str>,
    ) -> Result<Option<ScyllaConfig>, StoreError> {
        fn blank_is_none(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let Some(nodes) = blank_is_none(nodes) else {
            return Ok(None);
        };
        let nodes = parse_nodes(nodes)?;
        let keyspace = parse_keyspace(blank_is_none(keyspace).unwrap_or(DEFAULT_KEYSPACE))?;
        let replication_factor = match blank_is_none(replication_factor) {
            None => 1,
            Some(v) => v.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                StoreError::Backend(format!(
                    "{REPLICATION_FACTOR_ENV}={v:?} is not a positive integer"
                ))
            })?,
        };
        Ok(Some(ScyllaConfig {
            nodes,
            keyspace,
            replication_factor,
            open_timeout: OPEN_TIMEOUT,
        }))
    }
}

/// Splits `host:port,host:port` into contact points; a node without a port gets 9042. IPv6
/// addresses are written in brackets (`[::1]:9042`).
pub fn parse_nodes(list: &str) -> Result<Vec<String>, StoreError> {
    let bad = |node: &str, why: &str| StoreError::Backend(format!("{NODES_ENV}: {node:?} {why}"));
    let mut nodes = Vec::new();
    for node in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (host, port) = if let Some(rest) = node.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad(node, "has no closing bracket"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad(node, "has text after the bracket"))?,
                    ),
                ),
            }
        } else {
            match node.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (node, None),
            }
        };
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return Err(bad(node, "has no valid host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(node, "has no valid port"))?,
        };
        nodes.push(if node.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        });
    }
    if nodes.is_empty() {
        return Err(StoreError::Backend(format!("{NODES_ENV} names no node")));
    }
    Ok(nodes)
}

/// A keyspace name is spliced into `CREATE KEYSPACE`, so only CQL's unquoted identifiers are
/// accepted (a letter, then letters, digits and `_`, at most 48), folded to lower case as CQL
/// folds them.
pub fn parse_keyspace(name: &str) -> Result<String, StoreError> {
    let valid = name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(StoreError::Backend(format!(
            "{KEYSPACE_ENV}={name:?} is not a keyspace name (a letter, then letters, digits or _)"
        )));
    }
    Ok(name.to_ascii_lowercase())
}

/// `CREATE KEYSPACE` for `keyspace`; `scylla_vnodes` adds ScyllaDB's option that keeps the
/// keyspace off tablets (see the module documentation).
fn create_keyspace_cql(keyspace: &str, replication_factor: u32, scylla_vnodes: bool) -> String {
    let tablets = if scylla_vnodes {
        " AND tablets = {'enabled': false}"
    } else {
        ""
    };
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}{tablets}"
    )
}

/// The tables, created in the session's keyspace when missing.
const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS products (id text PRIMARY KEY, name text, description text, \
     price double, category text, stock bigint)",
    "CREATE TABLE IF NOT EXISTS products_by_name (bucket int, name text, id text, \
     PRIMARY KEY ((bucket), name, id))",
    "CREATE TABLE IF NOT EXISTS products_by_category (category text, name text, id text, \
     PRIMARY KEY ((category), name, id))",
    "CREATE TABLE IF NOT EXISTS categories (bucket int, name text, PRIMARY KEY ((bucket), name))",
    "CREATE TABLE IF NOT EXISTS users (id text PRIMARY KEY, username text, email text, \
     password_hash text, role text, created_at double)",
    "CREATE TABLE IF NOT EXISTS users_by_username (username text PRIMARY KEY, id text)",
    "CREATE TABLE IF NOT EXISTS users_by_email (email text PRIMARY KEY, id text)",
    "CREATE TABLE IF NOT EXISTS cart_items (user_id text, product_id text, name text, price double, \
     quantity bigint, PRIMARY KEY ((user_id), product_id))",
    "CREATE TABLE IF NOT EXISTS cart_activity (user_id text PRIMARY KEY, last_activity double, \
     checkout_attempted boolean, abandoned boolean)",
    "CREATE TABLE IF NOT EXISTS idle_carts (bucket int, last_activity double, user_id text, \
     checkout_attempted boolean, PRIMARY KEY ((bucket), last_activity, user_id))",
    "CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, user_id text, \
     items list<frozen<tuple<text, text, double, bigint>>>, total double, status text, \
     created_at double, history list<frozen<tuple<text, double>>>)",
    "CREATE TABLE IF NOT EXISTS orders_by_user (user_id text, created_at double, id text, \
     PRIMARY KEY ((user_id), created_at, id)) WITH CLUSTERING ORDER BY (created_at DESC, id ASC)",
    "CREATE TABLE IF NOT EXISTS orders_by_status (status text, created_at double, id text, \
     PRIMARY KEY ((status), created_at, id))",
];

/// Declares the prepared statements: one field of [`Statements`] each, and the list of their
/// texts for the tests.
macro_rules! statements {
    ($($field:ident = $cql:expr;)*) => {
        /// Every statement the store runs, prepared once when it opens.
        struct Statements {
            $($field: PreparedStatement,)*
        }

        /// `(name, CQL)` of every prepared statement.
        #[cfg_attr(not(test), allow(dead_code))]
        const STATEMENTS: &[(&str, &str)] = &[$((stringify!($field), $cql),)*];

        impl Statements {
            async fn prepare(session: &Session) -> Result<Statements, StoreError> {
                Ok(Statements {
                    $($field: prepare(session, stringify!($field), $cql).await?,)*
                })
            }
        }
    };
}

statements! {
    ping = "SELECT release_version FROM system.local WHERE key = 'local'";
    product = "SELECT id, name, description, price, category, stock FROM products WHERE id = ?";
    product_stock = "SELECT stock FROM products WHERE id = ?";
    insert_product = "INSERT INTO products (id, name, description, price, category, stock) \
                      VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    update_product = "UPDATE products SET name = ?, description = ?, price = ?, category = ? \
                      WHERE id = ? IF name = ? AND category = ?";
    update_product_and_stock = "UPDATE products SET name = ?, description = ?, price = ?, category = ?, \
                                stock = ? WHERE id = ? IF name = ? AND category = ?";
    delete_product = "DELETE FROM products WHERE id = ? IF name = ? AND category = ?";
    set_stock = "UPDATE products SET stock = ? WHERE id = ? IF stock = ?";
    any_product = "SELECT id FROM products_by_name WHERE bucket = 0 LIMIT 1";
    list_products = "SELECT id FROM products_by_name WHERE bucket = 0 LIMIT ?";
    list_category = "SELECT id FROM products_by_category WHERE category = ? LIMIT ?";
    index_product_name = "INSERT INTO products_by_name (bucket, name, id) VALUES (0, ?, ?)";
    unindex_product_name = "DELETE FROM products_by_name WHERE bucket = 0 AND name = ? AND id = ?";
    index_product_category = "INSERT INTO products_by_category (category, name, id) VALUES (?, ?, ?)";
    unindex_product_category = "DELETE FROM products_by_category WHERE category = ? AND name = ? AND id = ?";
    insert_category = "INSERT INTO categories (bucket, name) VALUES (0, ?)";
    categories = "SELECT name FROM categories WHERE bucket = 0";
    category = "SELECT name FROM categories WHERE bucket = 0 AND name = ?";
    insert_user = "INSERT INTO users (id, username, email, password_hash, role, created_at) \
                   VALUES (?, ?, ?, ?, ?, ?)";
    delete_user = "DELETE FROM users WHERE id = ?";
    user = "SELECT id, username, email, password_hash, role FROM users WHERE id = ?";
    claim_username = "INSERT INTO users_by_username (username, id) VALUES (?, ?) IF NOT EXISTS";
    release_username = "DELETE FROM users_by_username WHERE username = ? IF id = ?";
    user_id_by_username = "SELECT id FROM users_by_username WHERE username = ?";
    claim_email = "INSERT INTO users_by_email (email, id) VALUES (?, ?) IF NOT EXISTS";
    cart = "SELECT product_id, name, price, quantity FROM cart_items WHERE user_id = ?";
    upsert_cart_item = "INSERT INTO cart_items (user_id, product_id, name, price, quantity) \
                        VALUES (?, ?, ?, ?, ?)";
    delete_cart_item = "DELETE FROM cart_items WHERE user_id = ? AND product_id = ?";
    clear_cart = "DELETE FROM cart_items WHERE user_id = ?";
    any_cart_item = "SELECT product_id FROM cart_items WHERE user_id = ? LIMIT 1";
    cart_activity = "SELECT user_id, last_activity, checkout_attempted, abandoned FROM cart_activity \
                     WHERE user_id = ?";
    insert_cart_activity = "INSERT INTO cart_activity (user_id, last_activity, checkout_attempted, abandoned) \
                            VALUES (?, ?, ?, false) IF NOT EXISTS";
    touch_cart_activity = "UPDATE cart_activity SET last_activity = ?, checkout_attempted = ?, abandoned = false \
                           WHERE user_id = ? IF last_activity = ? AND abandoned = ?";
    delete_cart_activity = "DELETE FROM cart_activity WHERE user_id = ? IF last_activity = ? AND abandoned = ?";
    claim_cart_activity = "UPDATE cart_activity SET abandoned = true WHERE user_id = ? \
                           IF last_activity = ? AND abandoned = false";
    index_idle_cart = "INSERT INTO idle_carts (bucket, last_activity, user_id, checkout_attempted) \
                       VALUES (0, ?, ?, ?)";
    unindex_idle_cart = "DELETE FROM idle_carts WHERE bucket = 0 AND last_activity = ? AND user_id = ?";
    idle_carts = "SELECT last_activity, user_id, checkout_attempted FROM idle_carts \
                  WHERE bucket = 0 AND last_activity < ?";
    insert_order = "INSERT INTO orders (id, user_id, items, total, status, created_at, history) \
                    VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    order = "SELECT id, user_id, items, total, status, created_at, history FROM orders WHERE id = ?";
    set_order_status = "UPDATE orders SET status = ?, history = history + ? WHERE id = ? IF status = ?";
    index_order_user = "INSERT INTO orders_by_user (user_id, created_at, id) VALUES (?, ?, ?)";
    user_order_ids = "SELECT id FROM orders_by_user WHERE user_id = ?";
    index_order_status = "INSERT INTO orders_by_status (status, created_at, id) VALUES (?, ?, ?)";
    unindex_order_status = "DELETE FROM orders_by_status WHERE status = ? AND created_at = ? AND id = ?";
    order_ids_in_status = "SELECT id FROM orders_by_status WHERE status = ? LIMIT ?";
}

fn backend(e: impl Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

async fn prepare(session: &Session, name: &str, cql: &str) -> Result<PreparedStatement, StoreError> {
    let mut prepared = session
        .prepare(cql)
        .await
        .map_err(|e| StoreError::Backend(format!("preparing {name}: {e}")))?;
    // Reads and plain writes may be retried by the driver after a timeout; a lightweight
    // transaction or a list append may not (it could apply twice).
    prepared.set_is_idempotent(is_idempotent(cql));
    Ok(prepared)
}

fn is_idempotent(cql: &str) -> bool {
    !cql.contains(" IF ") && !cql.contains("+ ?")
}

/// The outcome of a lightweight transaction: whether it applied, and the row's current values
/// when it did not (Cassandra sends only the condition's columns, ScyllaDB all it names; a
/// missing row has none of them, or nulls).
struct Lwt {
    applied: bool,
    names: Vec<String>,
    row: Row,
}

impl Lwt {
    fn from(result: QueryResult) -> Result<Lwt, StoreError> {
        let rows = result.into_rows_result().map_err(backend)?;
        let names = rows
            .column_specs()
            .iter()
            .map(|spec| spec.name().to_string())
            .collect();
        let row: Row = rows
            .maybe_first_row()
            .map_err(backend)?
            .ok_or_else(|| StoreError::Backend("a lightweight transaction returned no row".into()))?;
        let applied = match row.columns.first() {
            Some(Some(CqlValue::Boolean(applied))) => *applied,
            other => {
                return Err(StoreError::Backend(format!(
                    "a lightweight transaction returned {other:?} for [applied]"
                )))
            }
        };
        Ok(Lwt { applied, names, row })
    }

    /// The current value of `column`, when the row exists.
    fn current(&self, column: &str) -> Option<&CqlValue> {
        let i = self.names.iter().position(|n| n == column)?;
        self.row.columns.get(i)?.as_ref()
    }
}

type ProductRow = (String, String, String, f64, String, i64);
type OrderRow = (
    String,
    String,
    Option<Vec<(String, String, f64, i64)>>,
    f64,
    String,
    f64,
    Option<Vec<(String, f64)>>,
);

fn product_from(row: ProductRow) -> Product {
    let (id, name, description, price, category, stock) = row;
    Product {
        id,
        name,
        description,
        price,
        category,
        stock,
    }
}

fn order_from(row: OrderRow) -> Order {
    let (id, user_id, items, total, status, created_at, history) = row;
    Order {
        id,
        user_id,
        // CQL stores an empty list as null.
        items: items
            .unwrap_or_default()
            .into_iter()
            .map(|(product_id, name, price, quantity)| OrderItem {
                product_id,
                name,
                price,
                quantity,
            })
            .collect(),
        total,
        status,
        created_at,
        history: history
            .unwrap_or_default()
            .into_iter()
            .map(|(status, at)| StatusChange { status, at })
            .collect(),
    }
}

fn text(s: &str) -> CqlValue {
    CqlValue::Text(s.to_string())
}

/// CQL's `LIMIT` is a positive `int`.
fn cql_limit(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A random pause of up to `max_ms` milliseconds, so that writers that collided on a
/// compare-and-set do not collide again in lockstep.
async fn backoff(attempt: u32) {
    let max_ms = 1u64 << attempt.min(5);
    let mut b = [0u8; 2];
    let jitter = match getrandom::fill(&mut b) {
        Ok(()) => u64::from(u16::from_le_bytes(b)) % (max_ms + 1),
        Err(_) => max_ms / 2,
    };
    tokio::time::sleep(Duration::from_millis(jitter)).await;
}

/// The Cassandra/ScyllaDB store of the shop. Cheap to clone (one shared session).
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    keyspace: String,
    st: Statements,
}

impl ScyllaStore {
    /// Connects to the cluster, creates the keyspace and tables when missing and prepares every
    /// statement. Fails with [`StoreError::Backend`] when no node answers within the timeouts.
    pub async fn open(config: &ScyllaConfig) -> Result<ScyllaStore, StoreError> {
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .build();
        let builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(CONNECT_TIMEOUT.min(config.open_timeout))
            .hostname_resolution_timeout(Some(CONNECT_TIMEOUT))
            .default_execution_profile_handle(profile.into_handle());
        let nodes = config.nodes.join(",");
        let session = match tokio::time::timeout(config.open_timeout, builder.build()).await {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => {
                return Err(StoreError::Backend(format!(
                    "connecting to CQL nodes {nodes}: {e}"
                )))
            }
            Err(_) => {
                return Err(StoreError::Backend(format!(
                    "connecting to CQL nodes {nodes}: no answer within {:?}",
                    config.open_timeout
                )))
            }
        };
        let keyspace = config.keyspace.clone();
        let scylla_form = create_keyspace_cql(&keyspace, config.replication_factor, true);
        if session.query_unpaged(scylla_form, ()).await.is_err() {
            // Not ScyllaDB (Cassandra rejects the tablets option), or a ScyllaDB without
            // tablets: the plain statement is the portable one, and its error is the one worth
            // reporting.
            let plain = create_keyspace_cql(&keyspace, config.replication_factor, false);
            session
                .query_unpaged(plain, ())
                .await
                .map_err(|e| StoreError::Backend(format!("creating keyspace {keyspace}: {e}")))?;
        }
        session
            .use_keyspace(keyspace.as_str(), false)
            .await
            .map_err(|e| StoreError::Backend(format!("using keyspace {keyspace}: {e}")))?;
        for table in TABLES {
            session
                .query_unpaged(*table, ())
                .await
                .map_err(|e| StoreError::Backend(format!("creating the schema ({table}): {e}")))?;
        }
        let mut st = Statements::prepare(&session).await?;
        st.idle_carts.set_page_size(IDLE_PAGE);
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                keyspace,
                st,
            }),
        })
    }

    /// The keyspace of the tables (`db.namespace`).
    pub fn keyspace(&self) -> &str {
        &self.inner.keyspace
    }

    fn st(&self) -> &Statements {
        &self.inner.st
    }

    async fn execute(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.inner
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(backend)
    }

    /// Runs a statement that returns nothing worth reading.
    async fn write(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<(), StoreError> {
        self.execute(statement, values).await.map(|_| ())
    }

    /// Runs a lightweight transaction.
    async fn lwt(&self, statement: &PreparedStatement, values: impl SerializeRow) -> Result<Lwt, StoreError> {
        Lwt::from(self.execute(statement, values).await?)
    }

    /// Runs a query and deserializes every row as `R`.
    async fn rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let rows = self
            .execute(statement, values)
            .await?
            .into_rows_result()
            .map_err(backend)?;
        let rows = rows.rows::<R>().map_err(backend)?;
        rows.collect::<Result<Vec<R>, _>>().map_err(backend)
    }

    /// Runs a query for at most one row.
    async fn row<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        Ok(self.rows(statement, values).await?.into_iter().next())
    }

    /// Runs the statements of a logged batch (all applied eventually, or none), each with its
    /// values (as CQL values, so that statements of different shapes share one list).
    async fn batch(&self, statements: Vec<(&PreparedStatement, Vec<CqlValue>)>) -> Result<(), StoreError> {
        if statements.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new(BatchType::Logged);
        let mut values = Vec::with_capacity(statements.len());
        for (statement, v) in statements {
            batch.append_statement(statement.clone());
            values.push(v);
        }
        self.inner
            .session
            .batch(&batch, values)
            .await
            .map(|_| ())
            .map_err(backend)
    }

    /// Reads the rows `fetch` finds for `ids` concurrently, in the order of `ids`, skipping
    /// those that are gone (an index entry whose row was deleted meanwhile).
    async fn fetch_each<T, F, Fut>(&self, ids: Vec<String>, fetch: F) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        F: Fn(ScyllaStore, String) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, id) in ids.into_iter().enumerate() {
            let read = fetch(self.clone(), id);
            tasks.spawn(async move { (i, read.await) });
        }
        let mut found = Vec::with_capacity(tasks.len());
        // Dropping the set on an early return aborts the reads still running.
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(|e| StoreError::Backend(format!("read task failed: {e}")))? {
                (_, Err(StoreError::NotFound)) => {}
                (_, Err(e)) => return Err(e),
                (i, Ok(row)) => found.push((i, row)),
            }
        }
        found.sort_by_key(|(i, _)| *i);
        Ok(found.into_iter().map(|(_, row)| row).collect())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.rows::<(Option<String>,)>(&self.st().ping, ())
            .await
            .map(|_| ())
    }

    // ---- catalogue -------------------------------------------------------------------------

    pub(super) async fn seed_catalogue(&self, products: Vec<NewProduct>) -> Result<bool, StoreError> {
        // Only the product service seeds, once at start: a check then inserts is enough here,
        // CQL having no multi-partition transaction to make it one step.
        if self.row::<(String,)>(&self.st().any_product, ()).await?.is_some() {
            return Ok(false);
        }
        for product in &products {
            self.create_product(super::new_id(), product).await?;
        }
        Ok(true)
    }

    pub(super) async fn categories(&self) -> Result<Vec<String>, StoreError> {
        // The clustering order of the partition sorts them.
        let rows = self.rows::<(String,)>(&self.st().categories, ()).await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    pub(super) async fn category_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .row::<(String,)>(&self.st().category, (name,))
            .await?
            .is_some())
    }

    pub(super) async fn list_products(
        &self,
        category: Option<&str>,
        page: u32,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // CQL has no OFFSET: read the keys of the pages up to this one (the partition's
        // clustering order is name, id) and keep the last page.
        let offset = u64::from(page.saturating_sub(1)) * u64::from(limit);
        let wanted = cql_limit(offset + u64::from(limit));
        let ids = match category {
            Some(category) => {
                self.rows::<(String,)>(&self.st().list_category, (category, wanted))
                    .await?
            }
            None => {
                self.rows::<(String,)>(&self.st().list_products, (wanted,))
                    .await?
            }
        };
        let ids = ids
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .map(|(id,)| id)
            .collect();
        self.fetch_each(ids, |store, id| async move { store.product(&id).await })
            .await
    }

    pub(super) async fn product(&self, id: &str) -> Result<Product, StoreError> {
        self.row::<ProductRow>(&self.st().product, (id,))
            .await?
            .map(product_from)
            .ok_or(StoreError::NotFound)
    }

    pub(super) async fn create_product(&self, id: String, p: &NewProduct) -> Result<Product, StoreError> {
        let st = self.st();
        self.batch(vec![
            (&st.insert_category, vec![text(&p.category)]),
            (&st.index_product_name, vec![text(&p.name), text(&id)]),
            (
                &st.index_product_category,
                vec![text(&p.category), text(&p.name), text(&id)],
            ),
        ])
        .await?;
        let inserted = self
            .lwt(
                &st.insert_product,
                (&id, &p.name, &p.description, p.price, &p.category, p.stock),
            )
            .await?;
        if !inserted.applied {
            return Err(StoreError::Conflict("id already taken".into()));
        }
        Ok(Product {
            id,
            name: p.name.clone(),
            description: p.description.clone(),
            price: p.price,
            category: p.category.clone(),
            stock: p.stock,
        })
    }

    /// Moves a product's index entries from its old name and category to its new ones.
    async fn reindex_product(
        &self,
        id: &str,
        old: (&str, &str),
        new: (&str, &str),
    ) -> Result<(), StoreError> {
        if old == new {
            return Ok(());
        }
        let st = self.st();
        let ((old_name, old_category), (new_name, new_category)) = (old, new);
        // A batch gives all its statements one timestamp, at which a deletion beats an
        // insertion of the same key: the by-name entry is moved only when its key changes.
        let mut statements = Vec::new();
        if old_name != new_name {
            statements.push((&st.unindex_product_name, vec![text(old_name), text(id)]));
            statements.push((&st.index_product_name, vec![text(new_name), text(id)]));
        }
        statements.push((
            &st.unindex_product_category,
            vec![text(old_category), text(old_name), text(id)],
        ));
        statements.push((
            &st.index_product_category,
            vec![text(new_category), text(new_name), text(id)],
        ));
        self.batch(statements).await
    }

    pub(super) async fn update_product(&self, id: &str, u: &ProductUpdate) -> Result<Product, StoreError> {
        let st = self.st();
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.product(id).await?;
            let name = u.name.as_ref().unwrap_or(&current.name);
            let description = u.description.as_ref().unwrap_or(&current.description);
            let price = u.price.unwrap_or(current.price);
            let category = u.category.as_ref().unwrap_or(&current.category);
            if category != &current.category {
                self.write(&st.insert_category, (category,)).await?;
            }
            // Conditioned on the name and category read, so that the index entries moved
            // below are the ones the row had; the stock is left to the stock CAS unless set.
            let outcome = match u.stock {
                Some(stock) => {
                    self.lwt(
                        &st.update_product_and_stock,
                        (
                            name,
                            description,
                            price,
                            category,
                            stock,
                            id,
                            &current.name,
                            &current.category,
                        ),
                    )
                    .await?
                }
                None => {
                    self.lwt(
                        &st.update_product,
                        (
                            name,
                            description,
                            price,
                            category,
                            id,
                            &current.name,
                            &current.category,
                        ),
                    )
                    .await?
                }
            };
            if outcome.applied {
                self.reindex_product(id, (&current.name, &current.category), (name, category))
                    .await?;
                return self.product(id).await;
            }
            if outcome.current("name").is_none() {
                return Err(StoreError::NotFound);
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "product {id}: too much contention to update"
        )))
    }

    pub(super) async fn delete_product(&self, id: &str) -> Result<(), StoreError> {
        let st = self.st();
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.product(id).await?;
            let outcome = self
                .lwt(&st.delete_product, (id, &current.name, &current.category))
                .await?;
            if outcome.applied {
                return self
                    .batch(vec![
                        (&st.unindex_product_name, vec![text(&current.name), text(id)]),
                        (
                            &st.unindex_product_category,
                            vec![text(&current.category), text(&current.name), text(id)],
                        ),
                    ])
                    .await;
            }
            if outcome.current("name").is_none() {
                return Err(StoreError::NotFound);
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "product {id}: too much contention to delete"
        )))
    }

    /// Changes a product's stock by compare-and-set: `next` maps the current level to the new
    /// one (or refuses); retried with the level a lost race reports. The new level.
    async fn cas_stock(
        &self,
        id: &str,
        next: impl Fn(i64) -> Result<i64, StoreError>,
    ) -> Result<i64, StoreError> {
        let st = self.st();
        let (mut current,) = self
            .row::<(Option<i64>,)>(&st.product_stock, (id,))
            .await?
            .ok_or(StoreError::NotFound)?;
        for attempt in 0..CAS_ATTEMPTS {
            let Some(stock) = current else {
                return Err(StoreError::NotFound);
            };
            let wanted = next(stock)?;
            let outcome = self.lwt(&st.set_stock, (wanted, id, stock)).await?;
            if outcome.applied {
                return Ok(wanted);
            }
            current = match outcome.current("stock") {
                Some(CqlValue::BigInt(s)) => Some(*s),
                Some(other) => return Err(StoreError::Backend(format!("stock of {id} is {other:?}"))),
                None => None,
            };
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "product {id}: too much contention on its stock"
        )))
    }

    pub(super) async fn restock(&self, id: &str, quantity: i64) -> Result<Product, StoreError> {
        self.cas_stock(id, |stock| Ok(stock.saturating_add(quantity)))
            .await?;
        self.product(id).await
    }

    pub(super) async fn decrement_stock(&self, items: &[(String, i64)]) -> Result<(), StoreError> {
        let mut taken: Vec<(&str, i64)> = Vec::with_capacity(items.len());
        for (id, quantity) in items {
            let quantity = *quantity;
            let took = self
                .cas_stock(id, |stock| {
                    if stock < quantity {
                        Err(StoreError::InsufficientStock {
                            product_id: id.clone(),
                            available: stock,
                        })
                    } else {
                        Ok(stock - quantity)
                    }
                })
                .await;
            if let Err(e) = took {
                // All or nothing: give back what the earlier lines took.
                for (id, quantity) in taken {
                    if let Err(undo) = self
                        .cas_stock(id, |stock| Ok(stock.saturating_add(quantity)))
                        .await
                    {
                        return Err(StoreError::Backend(format!(
                            "{e}; giving back {quantity} of {id} failed too: {undo}"
                        )));
                    }
                }
                return Err(e);
            }
            taken.push((id, quantity));
        }
        Ok(())
    }

    // ---- users -----------------------------------------------------------------------------

    pub(super) async fn create_user(&self, user: User) -> Result<User, StoreError> {
        let st = self.st();
        let username = user.username.to_ascii_lowercase();
        let email = user.email.to_ascii_lowercase();
        // The row first, then the claims on its unique values: a crash in between leaves an
        // unreachable row, never a name claimed by nobody.
        self.write(
            &st.insert_user,
            (
                &user.id,
                &user.username,
                &user.email,
                &user.password_hash,
                &user.role,
                super::now_seconds(),
            ),
        )
        .await?;
        if !self.lwt(&st.claim_username, (&username, &user.id)).await?.applied {
            self.write(&st.delete_user, (&user.id,)).await?;
            return Err(StoreError::Conflict("username already taken".into()));
        }
        if !self.lwt(&st.claim_email, (&email, &user.id)).await?.applied {
            self.lwt(&st.release_username, (&username, &user.id)).await?;
            self.write(&st.delete_user, (&user.id,)).await?;
            return Err(StoreError::Conflict("email already taken".into()));
        }
        Ok(user)
    }

    pub(super) async fn user(&self, id: &str) -> Result<User, StoreError> {
        let (id, username, email, password_hash, role) = self
            .row::<(String, String, String, String, String)>(&self.st().user, (id,))
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(User {
            id,
            username,
            email,
            password_hash,
            role,
        })
    }

    pub(super) async fn user_by_username(&self, username: &str) -> Result<User, StoreError> {
        let (id,) = self
            .row::<(String,)>(&self.st().user_id_by_username, (username.to_ascii_lowercase(),))
            .await?
            .ok_or(StoreError::NotFound)?;
        self.user(&id).await
    }

    // ---- carts -----------------------------------------------------------------------------

    pub(super) async fn cart(&self, user_id: &str) -> Result<Vec<CartItem>, StoreError> {
        let rows = self
            .rows::<(String, String, f64, i64)>(&self.st().cart, (user_id,))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(product_id, name, price, quantity)| CartItem {
                product_id,
                name,
                price,
                quantity,
            })
            .collect())
    }

    pub(super) async fn set_cart_item(&self, user_id: &str, item: &CartItem) -> Result<(), StoreError> {
        let st = self.st();
        if item.quantity == 0 {
            self.write(&st.delete_cart_item, (user_id, &item.product_id))
                .await
        } else {
            self.write(
                &st.upsert_cart_item,
                (user_id, &item.product_id, &item.name, item.price, item.quantity),
            )
            .await
        }
    }

    pub(super) async fn clear_cart(&self, user_id: &str) -> Result<(), StoreError> {
        self.write(&self.st().clear_cart, (user_id,)).await
    }

    // ---- cart activity ---------------------------------------------------------------------

    pub(super) async fn cart_activity(&self, user_id: &str) -> Result<Option<CartActivity>, StoreError> {
        let row = self
            .row::<(String, f64, bool, bool)>(&self.st().cart_activity, (user_id,))
            .await?;
        Ok(row.map(
            |(user_id, last_activity, checkout_attempted, abandoned)| CartActivity {
                user_id,
                last_activity,
                checkout_attempted,
                abandoned,
            },
        ))
    }

    pub(super) async fn touch_cart(
        &self,
        user_id: &str,
        at: f64,
        checkout_attempted: bool,
    ) -> Result<(), StoreError> {
        let st = self.st();
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.cart_activity(user_id).await?;
            let outcome = match &current {
                None => {
                    self.lwt(&st.insert_cart_activity, (user_id, at, checkout_attempted))
                        .await?
                }
                Some(old) => {
                    self.lwt(
                        &st.touch_cart_activity,
                        (at, checkout_attempted, user_id, old.last_activity, old.abandoned),
                    )
                    .await?
                }
            };
            if outcome.applied {
                // The new idle period is listed; the old one's entry (if it was not claimed,
                // which removed it) goes. Same key means same row: only the flag changes.
                let mut statements = vec![(
                    &st.index_idle_cart,
                    vec![
                        CqlValue::Double(at),
                        text(user_id),
                        CqlValue::Boolean(checkout_attempted),
                    ],
                )];
                if let Some(old) = current.filter(|old| old.last_activity != at) {
                    statements.push((
                        &st.unindex_idle_cart,
                        vec![CqlValue::Double(old.last_activity), text(user_id)],
                    ));
                }
                return self.batch(statements).await;
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "cart of {user_id}: too much contention on its activity"
        )))
    }

    pub(super) async fn forget_cart_activity(&self, user_id: &str) -> Result<(), StoreError> {
        let st = self.st();
        for attempt in 0..CAS_ATTEMPTS {
            let Some(old) = self.cart_activity(user_id).await? else {
                return Ok(());
            };
            let outcome = self
                .lwt(
                    &st.delete_cart_activity,
                    (user_id, old.last_activity, old.abandoned),
                )
                .await?;
            if outcome.applied {
                return self
                    .write(&st.unindex_idle_cart, (old.last_activity, user_id))
                    .await;
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "cart of {user_id}: too much contention on its activity"
        )))
    }

    pub(super) async fn claim_abandoned_carts(
        &self,
        cutoff: f64,
        limit: u32,
    ) -> Result<Vec<CartActivity>, StoreError> {
        let st = self.st();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut claimed = Vec::new();
        let mut paging = PagingState::start();
        for _ in 0..IDLE_PAGES {
            if claimed.len() >= limit {
                break;
            }
            let (result, next) = self
                .inner
                .session
                .execute_single_page(&st.idle_carts, (cutoff,), paging)
                .await
                .map_err(backend)?;
            let rows = result.into_rows_result().map_err(backend)?;
            let entries = rows
                .rows::<(f64, String, bool)>()
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            for (last_activity, user_id, checkout_attempted) in entries {
                if claimed.len() >= limit {
                    break;
                }
                // As in the SQLite store, an empty cart is not abandoned (and stays listed).
                if self
                    .row::<(String,)>(&st.any_cart_item, (&user_id,))
                    .await?
                    .is_none()
                {
                    continue;
                }
                let outcome = self
                    .lwt(&st.claim_cart_activity, (&user_id, last_activity))
                    .await?;
                let obsolete = outcome.applied
                    || !matches!(
                        (outcome.current("last_activity"), outcome.current("abandoned")),
                        (Some(CqlValue::Double(at)), Some(CqlValue::Boolean(false))) if *at == last_activity
                    );
                if obsolete {
                    // Claimed now, by another sweeper, touched since (listed anew) or forgotten.
                    self.write(&st.unindex_idle_cart, (last_activity, &user_id))
                        .await?;
                }
                if outcome.applied {
                    claimed.push(CartActivity {
                        user_id,
                        last_activity,
                        checkout_attempted,
                        abandoned: false,
                    });
                }
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => break,
            }
        }
        Ok(claimed)
    }

    // ---- orders ----------------------------------------------------------------------------

    pub(super) async fn create_order(&self, order: Order) -> Result<Order, StoreError> {
        let st = self.st();
        let items: Vec<(&str, &str, f64, i64)> = order
            .items
            .iter()
            .map(|i| (i.product_id.as_str(), i.name.as_str(), i.price, i.quantity))
            .collect();
        let history: Vec<(&str, f64)> = order.history.iter().map(|h| (h.status.as_str(), h.at)).collect();
        let at = CqlValue::Double(order.created_at);
        self.batch(vec![
            (
                &st.index_order_user,
                vec![text(&order.user_id), at.clone(), text(&order.id)],
            ),
            (
                &st.index_order_status,
                vec![text(&order.status), at, text(&order.id)],
            ),
        ])
        .await?;
        let inserted = self
            .lwt(
                &st.insert_order,
                (
                    &order.id,
                    &order.user_id,
                    items,
                    order.total,
                    &order.status,
                    order.created_at,
                    history,
                ),
            )
            .await?;
        if !inserted.applied {
            return Err(StoreError::Conflict("id already taken".into()));
        }
        Ok(order)
    }

    pub(super) async fn order(&self, id: &str) -> Result<Order, StoreError> {
        self.row::<OrderRow>(&self.st().order, (id,))
            .await?
            .map(order_from)
            .ok_or(StoreError::NotFound)
    }

    pub(super) async fn user_orders(&self, user_id: &str) -> Result<Vec<Order>, StoreError> {
        let ids = self
            .rows::<(String,)>(&self.st().user_order_ids, (user_id,))
            .await?;
        let ids = ids.into_iter().map(|(id,)| id).collect();
        self.fetch_each(ids, |store, id| async move { store.order(&id).await })
            .await
    }

    pub(super) async fn orders_in_status(&self, status: &str, limit: u32) -> Result<Vec<Order>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids = self
            .rows::<(String,)>(&self.st().order_ids_in_status, (status, cql_limit(limit.into())))
            .await?;
        let ids = ids.into_iter().map(|(id,)| id).collect();
        let orders = self
            .fetch_each(ids, |store, id| async move { store.order(&id).await })
            .await?;
        // An entry whose move to the new status is still under way names an order that has
        // left this status already.
        Ok(orders.into_iter().filter(|o| o.status == status).collect())
    }

    pub(super) async fn set_order_status(
        &self,
        id: &str,
        expected: &str,
        status: &str,
        at: f64,
    ) -> Result<Order, StoreError> {
        let st = self.st();
        let outcome = self
            .lwt(&st.set_order_status, (status, vec![(status, at)], id, expected))
            .await?;
        if !outcome.applied {
            return match outcome.current("status") {
                Some(CqlValue::Text(current)) => Err(StoreError::Stale {
                    current: current.clone(),
                }),
                Some(other) => Err(StoreError::Backend(format!("status of order {id} is {other:?}"))),
                None => Err(StoreError::NotFound),
            };
        }
        let order = self.order(id).await?;
        if expected != status {
            let at = CqlValue::Double(order.created_at);
            self.batch(vec![
                (
                    &st.unindex_order_status,
                    vec![text(expected), at.clone(), text(id)],
                ),
                (&st.index_order_status, vec![text(status), at, text(id)]),
            ])
            .await?;
        }
        Ok(order)
    }

    /// Drops this store's keyspace (the integration tests' clean-up).
    #[cfg(test)]
    pub(super) async fn drop_keyspace(&self) -> Result<(), StoreError> {
        let cql = format!("DROP KEYSPACE IF EXISTS {}", self.inner.keyspace);
        self.inner
            .session
            .query_unpaged(cql, ())
            .await
            .map(|_| ())
            .map_err(backend)
    }
}

/// The table a statement reads or writes (for the tests' schema checks).
#[cfg(test)]
fn table_of(cql: &str) -> Option<&str> {
    let words: Vec<&str> = cql.split_whitespace().collect();
    let after = |keyword: &str| {
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case(keyword))
            .and_then(|i| words.get(i + 1).copied())
    };
    after("FROM")
        .or_else(|| after("INTO"))
        .or_else(|| after("UPDATE"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn nodes_are_parsed_with_default_ports_and_errors_are_clear() {
        assert_eq!(
            parse_nodes("10.0.0.1:9042, db2 ,[::1]:19042,,[fe80::1]").unwrap(),
            ["10.0.0.1:9042", "db2:9042", "[::1]:19042", "[fe80::1]:9042"]
        );
        for bad in [
            "host:",
            "host:port",
            ":9042",
            "host:70000",
            "[::1",
            "[::1]x",
            " , ",
            "host:0",
        ] {
            let err = parse_nodes(bad).unwrap_err();
            assert!(
                matches!(&err, StoreError::Backend(m) if m.contains(NODES_ENV)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn configuration_selects_scylla_only_when_nodes_are_given() {
        assert_eq!(
            ScyllaConfig::from_values(None, Some("x"), Some("3")).unwrap(),
            None
        );
        assert_eq!(ScyllaConfig::from_values(Some("  "), None, None).unwrap(), None);
        assert_eq!(
            ScyllaConfig::from_values(Some("a:1,b:2"), None, None).unwrap(),
            Some(ScyllaConfig {
                nodes: vec!["a:1".into(), "b:2".into()],
                keyspace: "store".into(),
                replication_factor: 1,
                open_timeout: OPEN_TIMEOUT,
            })
        );
        let custom = ScyllaConfig::from_values(Some("a"), Some("Shop_2"), Some("3"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (custom.keyspace.as_str(), custom.replication_factor),
            ("shop_2", 3)
        );
        for (keyspace, rf) in [
            ("2shop", "1"),
            ("shop; DROP", "1"),
            ("store", "0"),
            ("store", "x"),
        ] {
            assert!(
                ScyllaConfig::from_values(Some("a"), Some(keyspace), Some(rf)).is_err(),
                "{keyspace} {rf}"
            );
        }
        assert!(parse_keyspace(&"k".repeat(49)).is_err());
    }

    #[test]
    fn schema_statements_create_only_if_missing() {
        for scylla in [true, false] {
            let cql = create_keyspace_cql("store", 3, scylla);
            assert!(
                cql.starts_with("CREATE KEYSPACE IF NOT EXISTS store WITH replication"),
                "{cql}"
            );
            assert!(cql.contains("'replication_factor': 3}"), "{cql}");
            assert_eq!(cql.contains("tablets"), scylla, "{cql}");
        }
        for table in TABLES {
            assert!(table.starts_with("CREATE TABLE IF NOT EXISTS "), "{table}");
        }
    }

    #[test]
    fn statements_use_keys_only_and_known_tables() {
        let tables: HashSet<&str> = TABLES
            .iter()
            .map(|t| t.split_whitespace().nth(5).expect("a table name"))
            .collect();
        assert_eq!(tables.len(), TABLES.len(), "one CREATE per table");
        let mut names = HashSet::new();
        for (name, cql) in STATEMENTS {
            assert!(names.insert(*name), "{name} twice");
            assert!(
                !cql.to_ascii_uppercase().contains("ALLOW FILTERING"),
                "{name}: {cql}"
            );
            let table = table_of(cql).unwrap_or_else(|| panic!("{name}: no table in {cql}"));
            assert!(
                tables.contains(table) || table == "system.local",
                "{name}: {table}"
            );
            // Each read names its partition key; a whole-table scan would have no WHERE.
            if cql.starts_with("SELECT") || cql.starts_with("DELETE") || cql.starts_with("UPDATE") {
                assert!(cql.contains(" WHERE "), "{name}: {cql}");
            }
        }
        // Every row whose values are compared and set is written only through Paxos.
        for (name, cql) in STATEMENTS {
            let table = table_of(cql).unwrap();
            let writes = !cql.starts_with("SELECT");
            if writes && ["products", "orders", "cart_activity"].contains(&table) {
                assert!(cql.contains(" IF "), "{name} writes {table} without LWT: {cql}");
                assert!(!is_idempotent(cql), "{name}");
            }
        }
        assert!(is_idempotent(
            STATEMENTS.iter().find(|(n, _)| *n == "cart").unwrap().1
        ));
    }
}
