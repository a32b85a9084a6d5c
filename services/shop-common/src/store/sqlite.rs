//! The embedded backend: SQLite (bundled, so nothing is installed) in WAL mode, one writer
//! connection and a few reader connections. Every method blocks: [`super::Store`] calls them
//! on tokio's blocking pool.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};

use super::{
    CartActivity, CartItem, NewProduct, Order, OrderItem, Product, ProductUpdate, StatusChange, StoreError,
    User,
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
";

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
        for (id, quantity) in items {
            // The condition makes the check and the write one statement; the CHECK constraint
            // on the column is the backstop should a later change forget it.
            let changed = tx
                .execute(
                    "UPDATE products SET stock = stock - ?2 WHERE id = ?1 AND stock >= ?2",
                    params![id, quantity],
                )
                .map_err(backend)?;
            if changed == 0 {
                let available = product_in(&tx, id)?.stock;
                return Err(StoreError::InsufficientStock {
                    product_id: id.clone(),
                    available,
                });
            }
        }
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
                     SELECT id, user_id, items, total, status, created_at FROM orders
                     WHERE user_id = ?1 ORDER BY created_at DESC, id LIMIT ?2 OFFSET ?3)
                 SELECT p.id, p.user_id, p.items, p.total, p.status, p.created_at, h.status, h.at
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
        let changed = tx
            .execute(
                "UPDATE orders SET status = ?3 WHERE id = ?1 AND status = ?2",
                params![id, expected, status],
            )
            .map_err(backend)?;
        if changed == 0 {
            let current = order_in(&tx, id)?.status;
            return Err(StoreError::Stale { current });
        }
        tx.execute(
            "INSERT INTO order_status_history (order_id, seq, status, at)
             SELECT ?1, COALESCE(MAX(seq) + 1, 0), ?2, ?3 FROM order_status_history WHERE order_id = ?1",
            params![id, status, at],
        )
        .map_err(backend)?;
        let order = order_in(&tx, id)?;
        tx.commit().map_err(backend)?;
        Ok(order)
    }
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
        .prepare_cached("SELECT id, user_id, items, total, status, created_at FROM orders WHERE id = ?1")
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
            ))
        })
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
    let (id, user_id, items, total, status, created_at) = row;
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
    })
}
