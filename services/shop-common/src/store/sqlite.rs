//! The embedded backend: SQLite (bundled, so nothing is installed) in WAL mode, one writer
//! connection and a few reader connections. Every method blocks: [`super::Store`] calls them
//! on tokio's blocking pool.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};

use super::{
    checkout_state, CartActivity, CartItem, Checkout, CheckoutOrder, NewProduct, Order, OrderItem,
    PendingRestock, Product, ProductUpdate, Reservation, StatusChange, StoreError, User,
};

/// Reader connections: WAL lets them read while the writer writes. Two cores are the target
/// machine; more readers than that would only queue on the CPU.
const READERS: usize = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS categories (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price REAL NOT NULL,
    category TEXT NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0)
);
CREATE INDEX IF NOT EXISTS products_by_category ON products (category, name, id);
CREATE INDEX IF NOT EXISTS products_by_name ON products (name, id);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cart_items (
    user_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    name TEXT NOT NULL,
    price REAL NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (user_id, product_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cart_activity (
    user_id TEXT PRIMARY KEY,
    last_activity REAL NOT NULL,
    checkout_attempted INTEGER NOT NULL,
    abandoned INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cart_activity_idle ON cart_activity (abandoned, last_activity);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    items TEXT NOT NULL,
    total REAL NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, created_at);
CREATE TABLE IF NOT EXISTS order_status_history (
    order_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (order_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS order_checkouts (
    checkout_id TEXT PRIMARY KEY,
    order_id TEXT,
    state TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS order_checkouts_by_order ON order_checkouts (order_id);
CREATE TABLE IF NOT EXISTS order_restocks (
    order_id TEXT PRIMARY KEY,
    checkout_id TEXT NOT NULL,
    done INTEGER NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS order_restocks_pending ON order_restocks (done, at);
CREATE TABLE IF NOT EXISTS stock_reservations (
    id TEXT PRIMARY KEY,
    items TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkouts (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    items TEXT NOT NULL,
    state TEXT NOT NULL,
    order_json TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checkouts_by_state ON checkouts (state, created_at);
";

/// `order_checkouts.state` of a checkout with an order.
const CHECKOUT_ORDERED: &str = "ordered";
/// `order_checkouts.state` of a checkout refused for good.
const CHECKOUT_ABORTED: &str = "aborted";
/// `stock_reservations.state` while the units are held.
const RESERVATION_TAKEN: &str = "taken";
/// `stock_reservations.state` once given back (or refused before any take).
const RESERVATION_RELEASED: &str = "released";

fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("journal encoding: {e}"))
}

/// The SQLite database of one service. Cheap to clone (shared connections).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// SQLite allows one writer at a time; holding this mutex is what serialises writes (and
    /// makes check-then-write sequences such as stock decrements atomic).
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Maps a unique-constraint failure to [`StoreError::Conflict`] naming the column.
fn insert_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &e {
        if failure.code == ErrorCode::ConstraintViolation && message.contains("UNIQUE") {
            let column = message.rsplit('.').next().unwrap_or("value").to_string();
            return StoreError::Conflict(format!("{column} already taken"));
        }
    }
    backend(e)
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding a connection leaves SQLite itself consistent (an open transaction
    // is rolled back when its guard drops), so the connection stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    // Writers queue behind each other instead of failing at once with SQLITE_BUSY.
    conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
    Ok(conn)
}

fn product_from_row(row: &Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        price: row.get(3)?,
        category: row.get(4)?,
        stock: row.get(5)?,
    })
}

const PRODUCT_COLUMNS: &str = "id, name, description, price, category, stock";

impl SqliteStore {
    /// Opens the database at `path`, creating its directory, the file and the schema when
    /// missing, and switches it to WAL mode (readers never block the writer).
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        let writer = open_connection(path, OpenFlags::default())?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!("journal mode is {mode}, not wal")));
        }
        // In WAL mode NORMAL loses no committed transaction on a process crash (only on power
        // loss), and saves an fsync per commit.
        writer
            .execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(backend)?;
        writer.execute_batch(SCHEMA).map_err(backend)?;
        let read_flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let readers = (0..READERS)
            .map(|_| open_connection(path, read_flags).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        })
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.writer)
    }

    /// A free reader if there is one, else the next in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.inner.readers {
            if let Ok(guard) = r.try_lock() {
                return guard;
            }
        }
        let i = self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % self.inner.readers.len();
        lock(&self.inner.readers[i])
    }

    pub(super) fn ping(&self) -> Result<(), StoreError> {
        self.reader()
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map(|_| ())
            .map_err(backend)
    }

    pub(super) fn seed_catalogue(&self, products: &[NewProduct]) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        let count: i64 = tx
            .query_row("SELECT COUNT(*) FROM products", [], |r| r.get(0))
            .map_err(backend)?;
        if count > 0 {
            return Ok(false);
        }
        for p in products {
            insert_product(&tx, &super::new_id(), p)?;
        }
        tx.commit().map_err(backend)?;
        Ok(true)
    }

    pub(super) fn categories(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached("SELECT name FROM categories ORDER BY name")
            .map_err(backend)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    pub(super) fn category_exists(&self, name: &str) -> Result<bool, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached("SELECT 1 FROM categories WHERE name = ?1")
            .map_err(backend)?;
        stmt.exists([name]).map_err(backend)
    }

    pub(super) fn list_products(
        &self,
        category: Option<&str>,
        page: u32,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        let offset = i64::from(page.saturating_sub(1)) * i64::from(limit);
        let conn = self.reader();
        let rows = match category {
            Some(category) => {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {PRODUCT_COLUMNS} FROM products WHERE category = ?1 ORDER BY name, id LIMIT ?2 OFFSET ?3"
                    ))
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![category, limit, offset], product_from_row)
                    .map_err(backend)?;
                rows.collect::<Result<Vec<_>, _>>()
            }
            None => {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {PRODUCT_COLUMNS} FROM products ORDER BY name, id LIMIT ?1 OFFSET ?2"
                    ))
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![limit, offset], product_from_row)
                    .map_err(backend)?;
                rows.collect::<Result<Vec<_>, _>>()
            }
        };
        rows.map_err(backend)
    }

    pub(super) fn product(&self, id: &str) -> Result<Product, StoreError> {
        let conn = self.reader();
        product_in(&conn, id)
    }

    pub(super) fn create_product(&self, id: String, product: &NewProduct) -> Result<Product, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        insert_product(&tx, &id, product)?;
        let created = product_in(&tx, &id)?;
        tx.commit().map_err(backend)?;
        Ok(created)
    }

    pub(super) fn update_product(&self, id: &str, u: &ProductUpdate) -> Result<Product, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        let current = product_in(&tx, id)?;
        let category = u.category.clone().unwrap_or(current.category);
        tx.execute("INSERT OR IGNORE INTO categories (name) VALUES (?1)", [&category])
            .map_err(backend)?;
        tx.execute(
            "UPDATE products SET name = ?2, description = ?3, price = ?4, category = ?5, stock = ?6 WHERE id = ?1",
            params![
                id,
                u.name.as_ref().unwrap_or(&current.name),
                u.description.as_ref().unwrap_or(&current.description),
                u.price.unwrap_or(current.price),
                category,
                u.stock.unwrap_or(current.stock),
            ],
        )
        .map_err(backend)?;
        let updated = product_in(&tx, id)?;
        tx.commit().map_err(backend)?;
        Ok(updated)
    }

    pub(super) fn delete_product(&self, id: &str) -> Result<(), StoreError> {
        let deleted = self
            .writer()
            .execute("DELETE FROM products WHERE id = ?1", [id])
            .map_err(backend)?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub(super) fn restock(&self, id: &str, quantity: i64) -> Result<Product, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        let changed = tx
            .execute(
                "UPDATE products SET stock = stock + ?2 WHERE id = ?1",
                params![id, quantity],
            )
            .map_err(backend)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        let product = product_in(&tx, id)?;
        tx.commit().map_err(backend)?;
        Ok(product)
    }

    pub(super) fn decrement_stock(&self, items: &[(String, i64)]) -> Result<(), StoreError> {
        let mut conn = self.writer();
        // Dropping the transaction without commit rolls back the lines already taken.
        let tx = conn.transaction().map_err(backend)?;
        take_stock(&tx, items)?;
        tx.commit().map_err(backend)
    }

    pub(super) fn create_user(&self, user: User) -> Result<User, StoreError> {
        self.writer()
            .execute(
                "INSERT INTO users (id, username, email, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![user.id, user.username, user.email, user.password_hash, user.role, super::now_seconds()],
            )
            .map_err(insert_error)?;
        Ok(user)
    }

    /// `column` is one of this module's literals, never user input.
    pub(super) fn user_by(&self, column: &'static str, value: &str) -> Result<User, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT id, username, email, password_hash, role FROM users WHERE {column} = ?1"
            ))
            .map_err(backend)?;
        stmt.query_row([value], |r| {
            Ok(User {
                id: r.get(0)?,
                username: r.get(1)?,
                email: r.get(2)?,
                password_hash: r.get(3)?,
                role: r.get(4)?,
            })
        })
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::NotFound)
    }

    pub(super) fn cart(&self, user_id: &str) -> Result<Vec<CartItem>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT product_id, name, price, quantity FROM cart_items WHERE user_id = ?1 ORDER BY product_id",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([user_id], |r| {
                Ok(CartItem {
                    product_id: r.get(0)?,
                    name: r.get(1)?,
                    price: r.get(2)?,
                    quantity: r.get(3)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    pub(super) fn set_cart_item(&self, user_id: &str, item: &CartItem) -> Result<(), StoreError> {
        let conn = self.writer();
        if item.quantity == 0 {
            conn.execute(
                "DELETE FROM cart_items WHERE user_id = ?1 AND product_id = ?2",
                params![user_id, item.product_id],
            )
            .map_err(backend)?;
        } else {
            conn.execute(
                "INSERT INTO cart_items (user_id, product_id, name, price, quantity) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_id, product_id) DO UPDATE SET name = ?3, price = ?4, quantity = ?5",
                params![user_id, item.product_id, item.name, item.price, item.quantity],
            )
            .map_err(backend)?;
        }
        Ok(())
    }

    pub(super) fn clear_cart(&self, user_id: &str) -> Result<(), StoreError> {
        self.writer()
            .execute("DELETE FROM cart_items WHERE user_id = ?1", [user_id])
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn touch_cart(
        &self,
        user_id: &str,
        at: f64,
        checkout_attempted: bool,
    ) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "INSERT INTO cart_activity (user_id, last_activity, checkout_attempted, abandoned) VALUES (?1, ?2, ?3, 0)
                 ON CONFLICT (user_id) DO UPDATE SET last_activity = ?2, checkout_attempted = ?3, abandoned = 0",
                params![user_id, at, checkout_attempted],
            )
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn cart_activity(&self, user_id: &str) -> Result<Option<CartActivity>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT user_id, last_activity, checkout_attempted, abandoned FROM cart_activity WHERE user_id = ?1",
            )
            .map_err(backend)?;
        stmt.query_row([user_id], activity_from_row)
            .optional()
            .map_err(backend)
    }

    pub(super) fn forget_cart_activity(&self, user_id: &str) -> Result<(), StoreError> {
        self.writer()
            .execute("DELETE FROM cart_activity WHERE user_id = ?1", [user_id])
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn claim_abandoned_carts(
        &self,
        cutoff: f64,
        limit: u32,
    ) -> Result<Vec<CartActivity>, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        let claimed = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT user_id, last_activity, checkout_attempted, abandoned FROM cart_activity a
                     WHERE abandoned = 0 AND last_activity < ?1
                       AND EXISTS (SELECT 1 FROM cart_items c WHERE c.user_id = a.user_id)
                     ORDER BY last_activity LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![cutoff, limit], activity_from_row)
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)?
        };
        for activity in &claimed {
            tx.execute(
                "UPDATE cart_activity SET abandoned = 1 WHERE user_id = ?1",
                [&activity.user_id],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(claimed)
    }

    pub(super) fn create_order(&self, order: Order) -> Result<Order, StoreError> {
        let items = serde_json::to_string(&order.items).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        tx.execute(
            "INSERT INTO orders (id, user_id, items, total, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![order.id, order.user_id, items, order.total, order.status, order.created_at],
        )
        .map_err(insert_error)?;
        for (seq, change) in order.history.iter().enumerate() {
            tx.execute(
                "INSERT INTO order_status_history (order_id, seq, status, at) VALUES (?1, ?2, ?3, ?4)",
                params![order.id, seq as i64, change.status, change.at],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(order)
    }

    pub(super) fn order(&self, id: &str) -> Result<Order, StoreError> {
        let conn = self.reader();
        order_in(&conn, id)
    }

    /// One statement for the whole page: the page of orders (by the `orders_by_user` index)
    /// joined with their history, one row per history entry, folded into orders here.
    pub(super) fn user_orders(&self, user_id: &str, page: u32, limit: u32) -> Result<Vec<Order>, StoreError> {
        let offset = i64::from(page.saturating_sub(1)) * i64::from(limit);
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "WITH page AS (
                     SELECT id, user_id, items, total, status, created_at,
                            (SELECT checkout_id FROM order_checkouts WHERE order_id = orders.id)
                                AS checkout_id
                     FROM orders
                     WHERE user_id = ?1 ORDER BY created_at DESC, id LIMIT ?2 OFFSET ?3)
                 SELECT p.id, p.user_id, p.items, p.total, p.status, p.created_at, h.status, h.at,
                        p.checkout_id
                 FROM page p LEFT JOIN order_status_history h ON h.order_id = p.id
                 ORDER BY p.created_at DESC, p.id, h.seq",
            )
            .map_err(backend)?;
        let mut rows = stmt.query(params![user_id, limit, offset]).map_err(backend)?;
        let mut orders: Vec<Order> = Vec::new();
        while let Some(row) = rows.next().map_err(backend)? {
            let id: String = row.get(0).map_err(backend)?;
            if orders.last().is_none_or(|o| o.id != id) {
                let items: String = row.get(2).map_err(backend)?;
                let items: Vec<OrderItem> = serde_json::from_str(&items)
                    .map_err(|e| StoreError::Backend(format!("order {id} items: {e}")))?;
                orders.push(Order {
                    user_id: row.get(1).map_err(backend)?,
                    items,
                    total: row.get(3).map_err(backend)?,
                    status: row.get(4).map_err(backend)?,
                    created_at: row.get(5).map_err(backend)?,
                    history: Vec::new(),
                    checkout_id: row.get(8).map_err(backend)?,
                    id,
                });
            }
            let status: Option<String> = row.get(6).map_err(backend)?;
            let at: Option<f64> = row.get(7).map_err(backend)?;
            if let (Some(order), Some(status), Some(at)) = (orders.last_mut(), status, at) {
                order.history.push(StatusChange { status, at });
            }
        }
        Ok(orders)
    }

    pub(super) fn orders_in_status(&self, status: &str, limit: u32) -> Result<Vec<Order>, StoreError> {
        let conn = self.reader();
        let ids = ids_of(
            &conn,
            "SELECT id FROM orders WHERE status = ?1 ORDER BY created_at, id LIMIT ?2",
            params![status, limit],
        )?;
        ids.iter().map(|id| order_in(&conn, id)).collect()
    }

    pub(super) fn set_order_status(
        &self,
        id: &str,
        expected: &str,
        status: &str,
        at: f64,
    ) -> Result<Order, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        let order = status_change_in(&tx, id, expected, status, at)?;
        tx.commit().map_err(backend)?;
        Ok(order)
    }
}

impl SqliteStore {
    pub(super) fn create_checkout_order(&self, order: Order) -> Result<CheckoutOrder, StoreError> {
        let checkout_id = order
            .checkout_id
            .clone()
            .ok_or_else(|| StoreError::Backend("a checkout order without its checkout id".into()))?;
        let items = serde_json::to_string(&order.items).map_err(json_error)?;
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        if let Some((state, order_id)) = checkout_row(&tx, &checkout_id)? {
            return match (state.as_str(), order_id) {
                (CHECKOUT_ORDERED, Some(order_id)) => Ok(CheckoutOrder::Existing(order_in(&tx, &order_id)?)),
                _ => Ok(CheckoutOrder::Aborted),
            };
        }
        tx.execute(
            "INSERT INTO orders (id, user_id, items, total, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![order.id, order.user_id, items, order.total, order.status, order.created_at],
        )
        .map_err(insert_error)?;
        for (seq, change) in order.history.iter().enumerate() {
            tx.execute(
                "INSERT INTO order_status_history (order_id, seq, status, at) VALUES (?1, ?2, ?3, ?4)",
                params![order.id, seq as i64, change.status, change.at],
            )
            .map_err(backend)?;
        }
        tx.execute(
            "INSERT INTO order_checkouts (checkout_id, order_id, state) VALUES (?1, ?2, ?3)",
            params![checkout_id, order.id, CHECKOUT_ORDERED],
        )
        .map_err(insert_error)?;
        tx.commit().map_err(backend)?;
        Ok(CheckoutOrder::Created(order))
    }

    pub(super) fn abort_checkout(&self, checkout_id: &str) -> Result<Option<Order>, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        if let Some((state, order_id)) = checkout_row(&tx, checkout_id)? {
            return match (state.as_str(), order_id) {
                (CHECKOUT_ORDERED, Some(order_id)) => Ok(Some(order_in(&tx, &order_id)?)),
                _ => Ok(None),
            };
        }
        tx.execute(
            "INSERT INTO order_checkouts (checkout_id, order_id, state) VALUES (?1, NULL, ?2)",
            params![checkout_id, CHECKOUT_ABORTED],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(None)
    }

    pub(super) fn cancel_order(
        &self,
        id: &str,
        expected: &str,
        cancelled: &str,
        at: f64,
    ) -> Result<Order, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        let order = status_change_in(&tx, id, expected, cancelled, at)?;
        if let Some(checkout_id) = &order.checkout_id {
            tx.execute(
                "INSERT OR IGNORE INTO order_restocks (order_id, checkout_id, done, at) VALUES (?1, ?2, 0, ?3)",
                params![id, checkout_id, at],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(order)
    }

    pub(super) fn pending_restocks(&self, limit: u32) -> Result<Vec<PendingRestock>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT order_id, checkout_id FROM order_restocks WHERE done = 0 ORDER BY at LIMIT ?1",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok(PendingRestock {
                    order_id: r.get(0)?,
                    checkout_id: r.get(1)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    pub(super) fn restock_done(&self, order_id: &str) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "UPDATE order_restocks SET done = 1 WHERE order_id = ?1",
                [order_id],
            )
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn reserve_stock(&self, id: &str, items: &[(String, i64)]) -> Result<Reservation, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        match reservation_state(&tx, id)?.as_deref() {
            Some(RESERVATION_TAKEN) => return Ok(Reservation::AlreadyTaken),
            Some(_) => return Ok(Reservation::Released),
            None => {}
        }
        take_stock(&tx, items)?;
        let encoded = serde_json::to_string(items).map_err(json_error)?;
        tx.execute(
            "INSERT INTO stock_reservations (id, items, state, at) VALUES (?1, ?2, ?3, ?4)",
            params![id, encoded, RESERVATION_TAKEN, super::now_seconds()],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(Reservation::Taken)
    }

    pub(super) fn release_reservation(&self, id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        let row: Option<(String, String)> = tx
            .query_row(
                "SELECT state, items FROM stock_reservations WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(backend)?;
        let released = match row {
            Some((state, _)) if state == RESERVATION_RELEASED => Vec::new(),
            Some((_, items)) => {
                let items: Vec<(String, i64)> = serde_json::from_str(&items).map_err(json_error)?;
                let mut given_back = Vec::with_capacity(items.len());
                for (product, quantity) in items {
                    // A product deleted since has no stock to give back to.
                    let changed = tx
                        .execute(
                            "UPDATE products SET stock = stock + ?2 WHERE id = ?1",
                            params![product, quantity],
                        )
                        .map_err(backend)?;
                    if changed > 0 {
                        given_back.push((product, quantity));
                    }
                }
                tx.execute(
                    "UPDATE stock_reservations SET state = ?2, at = ?3 WHERE id = ?1",
                    params![id, RESERVATION_RELEASED, super::now_seconds()],
                )
                .map_err(backend)?;
                given_back
            }
            None => {
                // Never taken: refused for good, so that a reserve still in flight takes nothing.
                tx.execute(
                    "INSERT INTO stock_reservations (id, items, state, at) VALUES (?1, '[]', ?2, ?3)",
                    params![id, RESERVATION_RELEASED, super::now_seconds()],
                )
                .map_err(backend)?;
                Vec::new()
            }
        };
        tx.commit().map_err(backend)?;
        Ok(released)
    }

    pub(super) fn begin_checkout(&self, checkout: &Checkout) -> Result<(), StoreError> {
        let items = serde_json::to_string(&checkout.items).map_err(json_error)?;
        self.writer()
            .execute(
                "INSERT INTO checkouts (id, user_id, items, state, order_json, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    checkout.id,
                    checkout.user_id,
                    items,
                    checkout.state,
                    checkout.order,
                    checkout.created_at,
                    checkout.updated_at
                ],
            )
            .map_err(|e| match insert_error(e) {
                StoreError::Conflict(_) => StoreError::Conflict("checkout id already taken".into()),
                e => e,
            })?;
        Ok(())
    }

    pub(super) fn checkout(&self, id: &str) -> Result<Checkout, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE id = ?1"))
            .map_err(backend)?;
        let row = stmt
            .query_row([id], checkout_from_row)
            .optional()
            .map_err(backend)?
            .ok_or(StoreError::NotFound)?;
        decode_checkout(row)
    }

    pub(super) fn advance_checkout(
        &self,
        id: &str,
        from: &str,
        to: &str,
        order: Option<&str>,
        at: f64,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(backend)?;
        let changed = tx
            .execute(
                "UPDATE checkouts SET state = ?3, order_json = COALESCE(?4, order_json), updated_at = ?5
                 WHERE id = ?1 AND state = ?2",
                params![id, from, to, order, at],
            )
            .map_err(backend)?;
        if changed == 0 {
            let current: Option<String> = tx
                .query_row("SELECT state FROM checkouts WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            return Err(current.map_or(StoreError::NotFound, |current| StoreError::Stale { current }));
        }
        if to == checkout_state::DONE {
            let (user_id, items): (String, String) = tx
                .query_row("SELECT user_id, items FROM checkouts WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(backend)?;
            let items: Vec<CartItem> = serde_json::from_str(&items).map_err(json_error)?;
            for item in &items {
                // Lines are taken out by what was ordered: a line the user raised meanwhile
                // (after a restart) keeps the rest.
                tx.execute(
                    "DELETE FROM cart_items WHERE user_id = ?1 AND product_id = ?2 AND quantity <= ?3",
                    params![user_id, item.product_id, item.quantity],
                )
                .map_err(backend)?;
                tx.execute(
                    "UPDATE cart_items SET quantity = quantity - ?3 WHERE user_id = ?1 AND product_id = ?2",
                    params![user_id, item.product_id, item.quantity],
                )
                .map_err(backend)?;
            }
            tx.execute(
                "DELETE FROM cart_activity WHERE user_id = ?1
                 AND NOT EXISTS (SELECT 1 FROM cart_items WHERE user_id = ?1)",
                [&user_id],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    pub(super) fn unfinished_checkouts(
        &self,
        user_id: Option<&str>,
        before: f64,
        limit: u32,
    ) -> Result<Vec<Checkout>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {CHECKOUT_COLUMNS} FROM checkouts
                 WHERE state IN (?1, ?2, ?3) AND created_at < ?4 AND (?5 IS NULL OR user_id = ?5)
                 ORDER BY created_at, id LIMIT ?6"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(
                params![
                    checkout_state::ACCEPTED,
                    checkout_state::RESERVED,
                    checkout_state::ORDERED,
                    before,
                    user_id,
                    limit
                ],
                checkout_from_row,
            )
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        rows.into_iter().map(decode_checkout).collect()
    }
}

const CHECKOUT_COLUMNS: &str = "id, user_id, items, state, order_json, created_at, updated_at";

type CheckoutRow = (String, String, String, String, Option<String>, f64, f64);

fn checkout_from_row(r: &Row<'_>) -> rusqlite::Result<CheckoutRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode_checkout(row: CheckoutRow) -> Result<Checkout, StoreError> {
    let (id, user_id, items, state, order, created_at, updated_at) = row;
    Ok(Checkout {
        items: serde_json::from_str(&items).map_err(json_error)?,
        id,
        user_id,
        state,
        order,
        created_at,
        updated_at,
    })
}

/// `(state, order_id)` of a checkout at the order service, if it is known.
fn checkout_row(
    conn: &Connection,
    checkout_id: &str,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    conn.query_row(
        "SELECT state, order_id FROM order_checkouts WHERE checkout_id = ?1",
        [checkout_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(backend)
}

fn reservation_state(conn: &Connection, id: &str) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT state FROM stock_reservations WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .optional()
    .map_err(backend)
}

/// Takes the units of every line inside `conn`'s transaction; the first line short of stock
/// (or missing) fails it, and the caller's dropped transaction gives back the others.
fn take_stock(conn: &Connection, items: &[(String, i64)]) -> Result<(), StoreError> {
    for (id, quantity) in items {
        // The condition makes the check and the write one statement; the CHECK constraint
        // on the column is the backstop should a later change forget it.
        let changed = conn
            .execute(
                "UPDATE products SET stock = stock - ?2 WHERE id = ?1 AND stock >= ?2",
                params![id, quantity],
            )
            .map_err(backend)?;
        if changed == 0 {
            let available = product_in(conn, id)?.stock;
            return Err(StoreError::InsufficientStock {
                product_id: id.clone(),
                available,
            });
        }
    }
    Ok(())
}

/// The compare-and-set of a status change inside `conn`'s transaction, with its history entry.
fn status_change_in(
    conn: &Connection,
    id: &str,
    expected: &str,
    status: &str,
    at: f64,
) -> Result<Order, StoreError> {
    let changed = conn
        .execute(
            "UPDATE orders SET status = ?3 WHERE id = ?1 AND status = ?2",
            params![id, expected, status],
        )
        .map_err(backend)?;
    if changed == 0 {
        let current = order_in(conn, id)?.status;
        return Err(StoreError::Stale { current });
    }
    conn.execute(
        "INSERT INTO order_status_history (order_id, seq, status, at)
         SELECT ?1, COALESCE(MAX(seq) + 1, 0), ?2, ?3 FROM order_status_history WHERE order_id = ?1",
        params![id, status, at],
    )
    .map_err(backend)?;
    order_in(conn, id)
}

fn insert_product(conn: &Connection, id: &str, p: &NewProduct) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO categories (name) VALUES (?1)",
        [&p.category],
    )
    .map_err(backend)?;
    conn.execute(
        "INSERT INTO products (id, name, description, price, category, stock) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, p.name, p.description, p.price, p.category, p.stock],
    )
    .map_err(insert_error)?;
    Ok(())
}

fn activity_from_row(row: &Row<'_>) -> rusqlite::Result<CartActivity> {
    Ok(CartActivity {
        user_id: row.get(0)?,
        last_activity: row.get(1)?,
        checkout_attempted: row.get(2)?,
        abandoned: row.get(3)?,
    })
}

fn product_in(conn: &Connection, id: &str) -> Result<Product, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?1"))
        .map_err(backend)?;
    stmt.query_row([id], product_from_row)
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::NotFound)
}

fn ids_of(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt.query_map(params, |r| r.get(0)).map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

fn order_in(conn: &Connection, id: &str) -> Result<Order, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, user_id, items, total, status, created_at,
                    (SELECT checkout_id FROM order_checkouts WHERE order_id = orders.id)
             FROM orders WHERE id = ?1",
        )
        .map_err(backend)?;
    let row = stmt
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, f64>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
    let (id, user_id, items, total, status, created_at, checkout_id) = row;
    let items: Vec<OrderItem> =
        serde_json::from_str(&items).map_err(|e| StoreError::Backend(format!("order {id} items: {e}")))?;
    let mut stmt = conn
        .prepare_cached("SELECT status, at FROM order_status_history WHERE order_id = ?1 ORDER BY seq")
        .map_err(backend)?;
    let history = stmt
        .query_map([&id], |r| {
            Ok(StatusChange {
                status: r.get(0)?,
                at: r.get(1)?,
            })
        })
        .map_err(backend)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)?;
    Ok(Order {
        id,
        user_id,
        items,
        total,
        status,
        created_at,
        history,
        checkout_id,
    })
}
