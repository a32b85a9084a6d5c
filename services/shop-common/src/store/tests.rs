//! Behaviour tests of the [`Store`] interface, run against every backend: SQLite always, and
//! Cassandra/ScyllaDB when `SCYLLA_NODES` names a cluster (each test in a keyspace of its own,
//! dropped at the end). Without `SCYLLA_NODES`, the CQL half of each test prints
//! "skipped: SCYLLA_NODES is not set".

use std::path::PathBuf;

use obskit::metrics::Registry;

use super::*;

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shop-common-{tag}-{}-{}", std::process::id(), new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The engine a behaviour test runs on.
enum Engine {
    Sqlite(TempDir),
    Scylla(ScyllaConfig),
}

/// One backend under test, with a registry of its own (so that counts are per backend).
struct Subject {
    engine: Engine,
    registry: Registry,
    metrics: QueryMetrics,
}

impl Subject {
    fn new(engine: Engine) -> Subject {
        let registry = Registry::new();
        let metrics = QueryMetrics::declare(&registry).unwrap();
        Subject {
            engine,
            registry,
            metrics,
        }
    }

    fn name(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite(_) => "sqlite",
            Engine::Scylla(_) => "cassandra",
        }
    }

    /// Opens (again) the store of this subject: the same file or keyspace each time.
    async fn open(&self) -> Store {
        match &self.engine {
            Engine::Sqlite(dir) => Store::open_sqlite(&dir.0.join("test.db"), self.metrics.clone())
                .await
                .unwrap(),
            Engine::Scylla(config) => Store::open_scylla(config, self.metrics.clone())
                .await
                .unwrap_or_else(|e| panic!("SCYLLA_NODES is set but the cluster fails: {e}")),
        }
    }

    /// Removes what the test stored (the directory goes with the subject).
    async fn finish(self, store: &Store) {
        if let Backend::Scylla(scylla) = &store.backend {
            scylla.drop_keyspace().await.unwrap();
        }
    }
}

/// `SCYLLA_NODES` when set and not empty.
fn scylla_nodes() -> Option<String> {
    std::env::var(scylla::NODES_ENV)
        .ok()
        .filter(|n| !n.trim().is_empty())
}

/// The backends a behaviour test runs on: SQLite, then the CQL cluster when one is configured
/// (in a new keyspace named after `tag`, which must be a short lower-case identifier).
fn subjects(tag: &str) -> Vec<Subject> {
    let mut subjects = vec![Subject::new(Engine::Sqlite(TempDir::new(tag)))];
    match scylla_nodes() {
        Some(nodes) => {
            let keyspace = format!("shop_test_{tag}_{}", &new_id()[..8]);
            let config = ScyllaConfig::from_values(Some(&nodes), Some(&keyspace), None)
                .unwrap()
                .expect("nodes are set");
            subjects.push(Subject::new(Engine::Scylla(config)));
        }
        None => println!("skipped: SCYLLA_NODES is not set ({tag} on Cassandra/ScyllaDB)"),
    }
    subjects
}

fn new_product(name: &str, category: &str, stock: i64) -> NewProduct {
    NewProduct {
        name: name.into(),
        description: String::new(),
        price: 9.5,
        category: category.into(),
        stock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_never_goes_negative_under_50_concurrent_decrements() {
    for subject in subjects("stock") {
        let store = subject.open().await;
        let backend = subject.name();
        let product = store
            .create_product(new_product("Last ones", "Books", 7))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                let id = product.id.clone();
                tokio::spawn(async move { store.decrement_stock(vec![(id, 1)]).await })
            })
            .collect();
        let mut ok = 0;
        let mut short = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => ok += 1,
                Err(StoreError::InsufficientStock { available, .. }) => {
                    assert_eq!(available, 0, "{backend}");
                    short += 1;
                }
                Err(e) => panic!("{backend}: unexpected {e}"),
            }
        }
        assert_eq!((ok, short), (7, 43), "{backend}");
        assert_eq!(store.product(&product.id).await.unwrap().stock, 0, "{backend}");
        subject.finish(&store).await;
    }
}

#[tokio::test]
async fn a_multi_line_decrement_is_all_or_nothing() {
    for subject in subjects("atomic") {
        let store = subject.open().await;
        let backend = subject.name();
        let a = store.create_product(new_product("A", "Home", 5)).await.unwrap();
        let b = store.create_product(new_product("B", "Home", 1)).await.unwrap();
        let err = store
            .decrement_stock(vec![(a.id.clone(), 2), (b.id.clone(), 2)])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::InsufficientStock {
                product_id: b.id.clone(),
                available: 1
            },
            "{backend}"
        );
        assert_eq!(
            store.product(&a.id).await.unwrap().stock,
            5,
            "{backend}: rolled back"
        );
        assert_eq!(
            store
                .decrement_stock(vec![(a.id.clone(), 1), ("nope".into(), 1)])
                .await,
            Err(StoreError::NotFound),
            "{backend}"
        );
        assert_eq!(
            store.product(&a.id).await.unwrap().stock,
            5,
            "{backend}: given back"
        );
        store
            .decrement_stock(vec![(a.id.clone(), 2), (b.id.clone(), 1)])
            .await
            .unwrap();
        assert_eq!(store.product(&a.id).await.unwrap().stock, 3, "{backend}");
        assert_eq!(store.product(&b.id).await.unwrap().stock, 0, "{backend}");
        assert_eq!(store.restock(&b.id, 4).await.unwrap().stock, 4, "{backend}");
        subject.finish(&store).await;
    }
}

#[tokio::test]
async fn data_survives_reopening_and_queries_are_measured() {
    for subject in subjects("reopen") {
        let backend = subject.name();
        let (product, user, order) = {
            let store = subject.open().await;
            let product = store
                .create_product(new_product("Lamp", "Home", 3))
                .await
                .unwrap();
            let user = store
                .create_user("ann", "ann@example.com", "$hash", "customer")
                .await
                .unwrap();
            store
                .set_cart_item(
                    &user.id,
                    CartItem {
                        product_id: product.id.clone(),
                        name: "Lamp".into(),
                        price: 9.5,
                        quantity: 2,
                    },
                )
                .await
                .unwrap();
            let item = OrderItem {
                product_id: product.id.clone(),
                name: "Lamp".into(),
                price: 9.5,
                quantity: 2,
            };
            let order = store.create_order(&user.id, vec![item], "CREATED").await.unwrap();
            store
                .set_order_status(&order.id, "CREATED", "PAID")
                .await
                .unwrap();
            (product, user, order)
        };
        let store = subject.open().await;
        assert_eq!(store.product(&product.id).await.unwrap(), product, "{backend}");
        assert_eq!(store.categories().await.unwrap(), ["Home"], "{backend}");
        assert_eq!(
            store.user_by_username("ANN").await.unwrap().id,
            user.id,
            "{backend}: usernames ignore case"
        );
        assert_eq!(store.user(&user.id).await.unwrap(), user, "{backend}");
        assert_eq!(store.cart(&user.id).await.unwrap()[0].quantity, 2, "{backend}");
        let reopened = store.order(&order.id).await.unwrap();
        assert_eq!(reopened.status, "PAID", "{backend}");
        let statuses: Vec<_> = reopened.history.iter().map(|h| h.status.as_str()).collect();
        assert_eq!(statuses, ["CREATED", "PAID"], "{backend}");
        assert_eq!(reopened.total, 19.0, "{backend}");
        assert_eq!(reopened.items, order.items, "{backend}");
        assert_eq!(
            store.user_orders(&user.id, 1, 20).await.unwrap().len(),
            1,
            "{backend}"
        );
        assert_eq!(
            store.orders_in_status("PAID", 10).await.unwrap().len(),
            1,
            "{backend}"
        );
        assert!(
            store.orders_in_status("CREATED", 10).await.unwrap().is_empty(),
            "{backend}"
        );
        store.ping().await.unwrap();

        let text = subject.registry.encode_text();
        for series in [
            r#"cassandra_query_duration_seconds_count{operation="INSERT",table="products"} 1"#,
            r#"cassandra_query_duration_seconds_count{operation="UPDATE",table="orders"} 1"#,
            r#"cassandra_query_duration_seconds_count{operation="UPSERT",table="carts"} 1"#,
            r#"cassandra_query_duration_seconds_count{operation="SELECT",table="system"} 1"#,
        ] {
            assert!(text.contains(series), "{backend}: {series} missing in\n{text}");
        }
        subject.finish(&store).await;
    }
}

#[tokio::test]
async fn conflicts_stale_writes_and_missing_rows_are_told_apart() {
    for subject in subjects("errors") {
        let store = subject.open().await;
        let backend = subject.name();
        store
            .create_user("bob", "bob@example.com", "h", "customer")
            .await
            .unwrap();
        assert_eq!(
            store
                .create_user("BOB", "other@example.com", "h", "customer")
                .await
                .unwrap_err(),
            StoreError::Conflict("username already taken".into()),
            "{backend}"
        );
        assert_eq!(
            store
                .create_user("bobby", "Bob@Example.com", "h", "customer")
                .await
                .unwrap_err(),
            StoreError::Conflict("email already taken".into()),
            "{backend}"
        );
        // A refused registration leaves nothing behind: its username is still free.
        store
            .create_user("bobby", "bobby@example.com", "h", "customer")
            .await
            .unwrap();
        let order = store.create_order("u1", Vec::new(), "CREATED").await.unwrap();
        assert_eq!(store.order(&order.id).await.unwrap(), order, "{backend}");
        store
            .set_order_status(&order.id, "CREATED", "PAID")
            .await
            .unwrap();
        assert_eq!(
            store
                .set_order_status(&order.id, "CREATED", "CANCELLED")
                .await
                .unwrap_err(),
            StoreError::Stale {
                current: "PAID".into()
            },
            "{backend}"
        );
        assert_eq!(
            store.order("missing").await.unwrap_err(),
            StoreError::NotFound,
            "{backend}"
        );
        assert_eq!(
            store
                .set_order_status("missing", "CREATED", "PAID")
                .await
                .unwrap_err(),
            StoreError::NotFound,
            "{backend}"
        );
        assert_eq!(
            store.delete_product("missing").await.unwrap_err(),
            StoreError::NotFound,
            "{backend}"
        );
        assert_eq!(
            store.restock("missing", 1).await.unwrap_err(),
            StoreError::NotFound,
            "{backend}"
        );
        assert_eq!(
            store
                .update_product("missing", ProductUpdate::default())
                .await
                .unwrap_err(),
            StoreError::NotFound,
            "{backend}"
        );
        assert_eq!(
            store.user("missing").await.unwrap_err(),
            StoreError::NotFound,
            "{backend}"
        );
        assert!(store.cart("nobody").await.unwrap().is_empty(), "{backend}");
        subject.finish(&store).await;
    }
}

#[tokio::test]
async fn the_catalogue_pages_by_name_then_id_and_follows_updates() {
    for subject in subjects("catalogue") {
        let store = subject.open().await;
        let backend = subject.name();
        let seeded = vec![
            new_product("Pear", "Fruit", 1),
            new_product("Apple", "Fruit", 1),
            new_product("Chair", "Home", 1),
            new_product("Apple", "Home", 1),
            new_product("Mango", "Fruit", 1),
        ];
        assert!(store.seed_catalogue(seeded.clone()).await.unwrap(), "{backend}");
        assert!(
            !store.seed_catalogue(seeded).await.unwrap(),
            "{backend}: seeded once"
        );
        assert_eq!(store.categories().await.unwrap(), ["Fruit", "Home"], "{backend}");
        assert!(store.category_exists("Home").await.unwrap(), "{backend}");
        assert!(!store.category_exists("Garden").await.unwrap(), "{backend}");

        let names = |products: &[Product]| -> Vec<String> {
            products
                .iter()
                .map(|p| format!("{}/{}", p.name, p.category))
                .collect()
        };
        let all = store.list_products(None, 1, 10).await.unwrap();
        assert_eq!(all.len(), 5, "{backend}");
        // Same names are ordered by id.
        let apples: Vec<_> = all.iter().filter(|p| p.name == "Apple").map(|p| &p.id).collect();
        assert!(apples[0] < apples[1], "{backend}: {apples:?}");
        let page2 = store.list_products(None, 2, 2).await.unwrap();
        assert_eq!(page2, all[2..4], "{backend}");
        assert_eq!(
            names(&store.list_products(None, 3, 2).await.unwrap()),
            ["Pear/Fruit"],
            "{backend}"
        );
        assert!(
            store.list_products(None, 4, 2).await.unwrap().is_empty(),
            "{backend}"
        );
        assert!(
            store.list_products(None, 1, 0).await.unwrap().is_empty(),
            "{backend}"
        );
        assert_eq!(
            names(&store.list_products(Some("Fruit"), 1, 10).await.unwrap()),
            ["Apple/Fruit", "Mango/Fruit", "Pear/Fruit"],
            "{backend}"
        );
        assert_eq!(
            names(&store.list_products(Some("Fruit"), 0, 1).await.unwrap()),
            ["Apple/Fruit"],
            "{backend}: page 0 is page 1"
        );

        let pear = all.iter().find(|p| p.name == "Pear").unwrap();
        let update = ProductUpdate {
            name: Some("Banana".into()),
            category: Some("Garden".into()),
            price: Some(1.25),
            ..ProductUpdate::default()
        };
        let banana = store.update_product(&pear.id, update).await.unwrap();
        assert_eq!(
            (
                banana.name.as_str(),
                banana.category.as_str(),
                banana.price,
                banana.stock
            ),
            ("Banana", "Garden", 1.25, 1),
            "{backend}"
        );
        assert!(store.category_exists("Garden").await.unwrap(), "{backend}");
        assert_eq!(
            names(&store.list_products(Some("Fruit"), 1, 10).await.unwrap()),
            ["Apple/Fruit", "Mango/Fruit"],
            "{backend}"
        );
        assert_eq!(
            names(&store.list_products(Some("Garden"), 1, 10).await.unwrap()),
            ["Banana/Garden"],
            "{backend}"
        );
        let sorted: Vec<_> = store
            .list_products(None, 1, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            sorted,
            ["Apple", "Apple", "Banana", "Chair", "Mango"],
            "{backend}"
        );
        let stock = store
            .update_product(
                &banana.id,
                ProductUpdate {
                    stock: Some(9),
                    ..ProductUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!((stock.name.as_str(), stock.stock), ("Banana", 9), "{backend}");
        store.delete_product(&banana.id).await.unwrap();
        assert_eq!(
            store.product(&banana.id).await.unwrap_err(),
            StoreError::NotFound,
            "{backend}"
        );
        assert!(
            store
                .list_products(Some("Garden"), 1, 10)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );
        assert_eq!(
            store.list_products(None, 1, 10).await.unwrap().len(),
            4,
            "{backend}"
        );
        subject.finish(&store).await;
    }
}

#[tokio::test]
async fn orders_are_listed_by_user_and_by_status_and_carts_by_product() {
    for subject in subjects("orders") {
        let store = subject.open().await;
        let backend = subject.name();
        let first = store.create_order("u1", Vec::new(), "CREATED").await.unwrap();
        let second = store.create_order("u1", Vec::new(), "CREATED").await.unwrap();
        store.create_order("u2", Vec::new(), "CREATED").await.unwrap();
        let mine: Vec<_> = store
            .user_orders("u1", 1, 20)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(
            mine,
            [second.id.clone(), first.id.clone()],
            "{backend}: newest first"
        );
        assert_eq!(
            store.orders_in_status("CREATED", 10).await.unwrap().len(),
            3,
            "{backend}"
        );
        let oldest = store.orders_in_status("CREATED", 1).await.unwrap();
        assert_eq!(oldest[0].id, first.id, "{backend}: oldest first");
        assert!(
            store.orders_in_status("CREATED", 0).await.unwrap().is_empty(),
            "{backend}"
        );
        store
            .set_order_status(&first.id, "CREATED", "PAID")
            .await
            .unwrap();
        let paid = store
            .set_order_status(&first.id, "PAID", "SHIPPED")
            .await
            .unwrap();
        assert_eq!(paid.history.len(), 3, "{backend}");
        assert_eq!(
            store.orders_in_status("CREATED", 10).await.unwrap().len(),
            2,
            "{backend}"
        );
        assert!(
            store.orders_in_status("PAID", 10).await.unwrap().is_empty(),
            "{backend}"
        );
        assert_eq!(
            store.orders_in_status("SHIPPED", 10).await.unwrap()[0].id,
            first.id,
            "{backend}"
        );

        let line = |product_id: &str, quantity| CartItem {
            product_id: product_id.into(),
            name: product_id.to_uppercase(),
            price: 2.0,
            quantity,
        };
        store.set_cart_item("u1", line("b", 1)).await.unwrap();
        store.set_cart_item("u1", line("a", 1)).await.unwrap();
        store.set_cart_item("u1", line("b", 5)).await.unwrap();
        assert_eq!(
            store.cart("u1").await.unwrap(),
            [line("a", 1), line("b", 5)],
            "{backend}"
        );
        store.set_cart_item("u1", line("a", 0)).await.unwrap();
        assert_eq!(store.cart("u1").await.unwrap(), [line("b", 5)], "{backend}");
        store.clear_cart("u1").await.unwrap();
        assert!(store.cart("u1").await.unwrap().is_empty(), "{backend}");
        subject.finish(&store).await;
    }
}

#[tokio::test]
async fn queries_open_client_spans_with_db_conventions() {
    use std::sync::{Arc, Mutex};

    use obskit::trace::{AttrValue, FinishedSpan, SpanSink};

    #[derive(Default)]
    struct Collect(Mutex<Vec<FinishedSpan>>);
    impl SpanSink for Collect {
        fn on_end(&self, span: FinishedSpan) {
            self.0.lock().unwrap().push(span);
        }
    }

    for subject in subjects("spans") {
        let store = subject.open().await;
        let backend = subject.name();
        let namespace = match &subject.engine {
            Engine::Sqlite(_) => "test".to_string(),
            Engine::Scylla(config) => config.keyspace.clone(),
        };
        let sink = Arc::new(Collect::default());
        // The sink is process-wide; other tests in this binary may add spans too, so look for
        // ours (by namespace).
        obskit::trace::set_sink(sink.clone());
        let _ = store.categories().await;
        obskit::trace::clear_sink();
        // Checked in a block: the lock is released before the clean-up awaits.
        {
            let spans = sink.0.lock().unwrap();
            let span = spans
                .iter()
                .find(|s| {
                    s.name == "SELECT categories"
                        && matches!(s.attribute("db.namespace"), Some(AttrValue::Str(n)) if *n == namespace)
                })
                .unwrap_or_else(|| panic!("{backend}: a span for the query"));
            assert_eq!(span.kind, SpanKind::Client);
            let str_attr = |k: &str| match span.attribute(k) {
                Some(AttrValue::Str(s)) => s.to_string(),
                other => panic!("{backend} {k}: {other:?}"),
            };
            assert_eq!(str_attr("db.system.name"), backend);
            assert_eq!(str_attr("db.collection.name"), "categories");
            assert_eq!(str_attr("db.operation.name"), "SELECT");
        }
        subject.finish(&store).await;
    }
}

/// Needs no server: a refused connection and a silent listener both end in a clear
/// [`StoreError::Backend`], the latter once the opening timeout has passed.
#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_backend_error() {
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
        // dropped here: the port now refuses connections
    };
    // Accepts TCP connections (the kernel's backlog does) but never answers CQL.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let metrics = QueryMetrics::declare(&Registry::new()).unwrap();
    for addr in [refused, silent_addr] {
        let mut config = ScyllaConfig::from_values(Some(&addr.to_string()), None, None)
            .unwrap()
            .unwrap();
        config.open_timeout = std::time::Duration::from_secs(2);
        match Store::open_scylla(&config, metrics.clone()).await {
            Err(StoreError::Backend(message)) => {
                assert!(message.contains("connecting to CQL nodes"), "{message}");
                assert!(message.contains(&addr.to_string()), "{message}");
            }
            Err(other) => panic!("{addr}: {other}"),
            Ok(store) => panic!("{addr}: connected to {store:?}"),
        }
    }
    drop(silent);
}

#[test]
fn ids_look_like_uuid_v4() {
    let id = new_id();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    assert_ne!(id, new_id());
}

/// A user's orders come a page at a time, newest first, each with its whole history.
#[tokio::test]
async fn a_users_orders_page_newest_first_with_their_histories() {
    for subject in subjects("order pages") {
        let store = subject.open().await;
        let backend = subject.name();
        let item = |n: i64| OrderItem {
            product_id: format!("p{n}"),
            name: format!("Product {n}"),
            price: 1.5,
            quantity: n,
        };
        let mut created = Vec::new();
        for n in 1..=7 {
            created.push(
                store
                    .create_order("pager", vec![item(n)], "CREATED")
                    .await
                    .unwrap(),
            );
        }
        store
            .create_order("someone else", vec![item(1)], "CREATED")
            .await
            .unwrap();
        // Two orders with a longer history, to see that histories stay with their order.
        store
            .set_order_status(&created[2].id, "CREATED", "PAID")
            .await
            .unwrap();
        store
            .set_order_status(&created[2].id, "PAID", "SHIPPED")
            .await
            .unwrap();
        store
            .set_order_status(&created[5].id, "CREATED", "CANCELLED")
            .await
            .unwrap();

        let mut newest_first: Vec<Order> = Vec::new();
        for id in created.iter().rev().map(|o| &o.id) {
            newest_first.push(store.order(id).await.unwrap());
        }
        let all = store.user_orders("pager", 1, 100).await.unwrap();
        assert_eq!(
            all, newest_first,
            "{backend}: the whole list, newest first, rows as read one by one"
        );

        let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
        let expected = ids(newest_first.clone());
        let mut paged = Vec::new();
        for page in 1..=3 {
            let got = store.user_orders("pager", page, 3).await.unwrap();
            assert_eq!(got.len(), [3, 3, 1][page as usize - 1], "{backend}: page {page}");
            paged.extend(ids(got));
        }
        assert_eq!(
            paged, expected,
            "{backend}: pages of 3 cover the list once, in order"
        );
        assert!(
            store.user_orders("pager", 4, 3).await.unwrap().is_empty(),
            "{backend}"
        );
        assert!(
            store
                .user_orders("pager", 1_000_000, 100)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );
        let third = store.user_orders("pager", 3, 2).await.unwrap();
        assert_eq!(third, newest_first[4..6], "{backend}: page 3 of 2");
        assert_eq!(
            third[0].history.len(),
            3,
            "{backend}: the SHIPPED order keeps its history"
        );
        assert_eq!(third[1].history.len(), 1, "{backend}");
        assert!(
            store.user_orders("nobody", 1, 20).await.unwrap().is_empty(),
            "{backend}"
        );
        subject.finish(&store).await;
    }
}

/// Cart activity (the cart service's abandonment sweeper), on every backend.
#[tokio::test]
async fn abandoned_carts_are_claimed_once_per_idle_period_and_survive_reopening() {
    for subject in subjects("activity") {
        let backend = subject.name();
        let store = subject.open().await;
        let line = |quantity| CartItem {
            product_id: "p1".into(),
            name: "Widget".into(),
            price: 2.5,
            quantity,
        };
        for user in ["idle", "fresh", "empty", "tried"] {
            if user != "empty" {
                store.set_cart_item(user, line(1)).await.unwrap();
            }
        }
        store.touch_cart("idle", 100.0, false).await.unwrap();
        store.touch_cart("fresh", 500.0, false).await.unwrap();
        store.touch_cart("empty", 100.0, false).await.unwrap();
        store.touch_cart("tried", 150.0, true).await.unwrap();
        assert_eq!(store.cart_activity("nobody").await.unwrap(), None);

        let claimed = store.claim_abandoned_carts(200.0, 10).await.unwrap();
        let got: Vec<(&str, bool)> = claimed
            .iter()
            .map(|a| (a.user_id.as_str(), a.checkout_attempted))
            .collect();
        assert_eq!(
            got,
            [("idle", false), ("tried", true)],
            "{backend}: oldest first, empty carts never"
        );
        assert!(
            store.claim_abandoned_carts(200.0, 10).await.unwrap().is_empty(),
            "{backend}: counted once"
        );

        // A reopened store remembers what was counted and what is still idle.
        drop(store);
        let store = subject.open().await;
        assert!(store.cart_activity("idle").await.unwrap().unwrap().abandoned);
        assert!(store.claim_abandoned_carts(200.0, 10).await.unwrap().is_empty());
        let claimed = store.claim_abandoned_carts(600.0, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].user_id, "fresh");

        // New activity starts a new idle period; forgetting removes the record.
        store.touch_cart("idle", 700.0, true).await.unwrap();
        let activity = store.cart_activity("idle").await.unwrap().unwrap();
        assert_eq!(
            (
                activity.last_activity,
                activity.checkout_attempted,
                activity.abandoned
            ),
            (700.0, true, false)
        );
        let claimed = store.claim_abandoned_carts(800.0, 1).await.unwrap();
        assert_eq!(claimed.len(), 1, "{backend}: at most `limit`");
        store.forget_cart_activity("idle").await.unwrap();
        assert_eq!(store.cart_activity("idle").await.unwrap(), None);
        subject.finish(&store).await;
    }
}

fn line(product_id: &str, quantity: i64) -> CartItem {
    CartItem {
        product_id: product_id.into(),
        name: product_id.into(),
        price: 2.0,
        quantity,
    }
}

#[tokio::test]
async fn a_reservation_takes_once_releases_once_and_refuses_after_release() {
    for subject in subjects("reservations") {
        let store = subject.open().await;
        let backend = subject.name();
        let p = store.create_product(new_product("R", "Home", 10)).await.unwrap();
        let stock = || async { store.product(&p.id).await.unwrap().stock };
        let items = vec![(p.id.clone(), 3)];
        assert_eq!(
            store.reserve_stock("r1", items.clone()).await.unwrap(),
            Reservation::Taken,
            "{backend}"
        );
        assert_eq!(
            store.reserve_stock("r1", items.clone()).await.unwrap(),
            Reservation::AlreadyTaken,
            "{backend}"
        );
        assert_eq!(stock().await, 7, "{backend}");
        assert_eq!(store.release_reservation("r1").await.unwrap(), items, "{backend}");
        assert!(
            store.release_reservation("r1").await.unwrap().is_empty(),
            "{backend}"
        );
        assert_eq!(stock().await, 10, "{backend}: no double restock");
        assert_eq!(
            store.reserve_stock("r1", items.clone()).await.unwrap(),
            Reservation::Released,
            "{backend}"
        );
        // Released before any reserve: refused for good.
        assert!(
            store.release_reservation("r2").await.unwrap().is_empty(),
            "{backend}"
        );
        assert_eq!(
            store.reserve_stock("r2", items.clone()).await.unwrap(),
            Reservation::Released,
            "{backend}"
        );
        // Short of stock: nothing taken, nothing recorded, so the id can be tried again.
        let err = store
            .reserve_stock("r3", vec![(p.id.clone(), 11)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InsufficientStock { .. }),
            "{backend}: {err}"
        );
        assert_eq!(
            store.reserve_stock("r3", vec![(p.id.clone(), 10)]).await.unwrap(),
            Reservation::Taken
        );
        assert_eq!(stock().await, 0, "{backend}");
        subject.finish(&store).await;
    }
}

#[tokio::test]
async fn a_checkout_order_is_created_once_aborts_are_final_and_cancels_journal_a_restock() {
    for subject in subjects("checkout-orders") {
        let store = subject.open().await;
        let backend = subject.name();
        let items = vec![OrderItem {
            product_id: "p".into(),
            name: "P".into(),
            price: 1.5,
            quantity: 2,
        }];
        let CheckoutOrder::Created(first) = store
            .create_checkout_order("c1", "u1", items.clone(), "CREATED")
            .await
            .unwrap()
        else {
            panic!("{backend}: the first create creates");
        };
        assert_eq!(first.checkout_id.as_deref(), Some("c1"), "{backend}");
        let again = store
            .create_checkout_order("c1", "u1", items.clone(), "CREATED")
            .await
            .unwrap();
        assert_eq!(again, CheckoutOrder::Existing(first.clone()), "{backend}");
        assert_eq!(
            store.user_orders("u1", 1, 20).await.unwrap().len(),
            1,
            "{backend}"
        );
        assert_eq!(
            store.abort_checkout("c1").await.unwrap(),
            Some(first.clone()),
            "{backend}"
        );
        assert_eq!(store.abort_checkout("c2").await.unwrap(), None, "{backend}");
        assert_eq!(store.abort_checkout("c2").await.unwrap(), None, "{backend}");
        let late = store
            .create_checkout_order("c2", "u1", items.clone(), "CREATED")
            .await
            .unwrap();
        assert_eq!(late, CheckoutOrder::Aborted, "{backend}");
        assert_eq!(
            store.user_orders("u1", 1, 20).await.unwrap().len(),
            1,
            "{backend}"
        );

        // A cancel journals the restock with the status change; done once given back.
        assert!(store.pending_restocks(10).await.unwrap().is_empty(), "{backend}");
        let cancelled = store
            .cancel_order(&first.id, "CREATED", "CANCELLED")
            .await
            .unwrap();
        assert_eq!(cancelled.status, "CANCELLED", "{backend}");
        let pending = store.pending_restocks(10).await.unwrap();
        assert_eq!(
            pending,
            [PendingRestock {
                order_id: first.id.clone(),
                checkout_id: "c1".into()
            }],
            "{backend}"
        );
        store.restock_done(&first.id).await.unwrap();
        assert!(store.pending_restocks(10).await.unwrap().is_empty(), "{backend}");
        // An order without a checkout took no stock: nothing to give back.
        let plain = store.create_order("u1", items.clone(), "CREATED").await.unwrap();
        store
            .cancel_order(&plain.id, "CREATED", "CANCELLED")
            .await
            .unwrap();
        assert!(store.pending_restocks(10).await.unwrap().is_empty(), "{backend}");
        subject.finish(&store).await;
    }
}

#[tokio::test]
async fn the_checkout_journal_moves_by_compare_and_set_and_done_takes_the_lines_out() {
    for subject in subjects("checkout-journal") {
        let store = subject.open().await;
        let backend = subject.name();
        store.set_cart_item("u1", line("a", 2)).await.unwrap();
        store.set_cart_item("u1", line("b", 1)).await.unwrap();
        store.touch_cart("u1", 1.0, true).await.unwrap();
        let now = now_seconds();
        let checkout = Checkout {
            id: "k1".into(),
            user_id: "u1".into(),
            items: vec![line("a", 2), line("b", 1)],
            state: checkout_state::ACCEPTED.into(),
            order: None,
            created_at: now,
            updated_at: now,
        };
        store.begin_checkout(checkout.clone()).await.unwrap();
        assert!(
            matches!(
                store.begin_checkout(checkout.clone()).await,
                Err(StoreError::Conflict(_))
            ),
            "{backend}"
        );
        assert_eq!(store.checkout("k1").await.unwrap(), checkout, "{backend}");
        let unfinished = |user: Option<&'static str>| {
            let store = store.clone();
            async move {
                store
                    .unfinished_checkouts(user, now + 1.0, 10)
                    .await
                    .unwrap()
                    .len()
            }
        };
        assert_eq!(
            (
                unfinished(None).await,
                unfinished(Some("u1")).await,
                unfinished(Some("u2")).await
            ),
            (1, 1, 0)
        );
        // Only older than `before` counts.
        assert!(
            store
                .unfinished_checkouts(None, now - 1.0, 10)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );

        let stale = store
            .advance_checkout("k1", checkout_state::RESERVED, checkout_state::ORDERED, None)
            .await
            .unwrap_err();
        assert_eq!(
            stale,
            StoreError::Stale {
                current: checkout_state::ACCEPTED.into()
            },
            "{backend}"
        );
        store
            .advance_checkout("k1", checkout_state::ACCEPTED, checkout_state::RESERVED, None)
            .await
            .unwrap();
        store
            .advance_checkout(
                "k1",
                checkout_state::RESERVED,
                checkout_state::ORDERED,
                Some("{\"id\":\"o1\"}".into()),
            )
            .await
            .unwrap();
        // A line raised meanwhile keeps what was not ordered.
        store.set_cart_item("u1", line("a", 5)).await.unwrap();
        store
            .advance_checkout("k1", checkout_state::ORDERED, checkout_state::DONE, None)
            .await
            .unwrap();
        let done = store.checkout("k1").await.unwrap();
        assert_eq!(
            (done.state.as_str(), done.order.as_deref()),
            (checkout_state::DONE, Some("{\"id\":\"o1\"}")),
            "{backend}"
        );
        let cart: Vec<_> = store
            .cart("u1")
            .await
            .unwrap()
            .into_iter()
            .map(|i| (i.product_id, i.quantity))
            .collect();
        if backend == "sqlite" {
            assert_eq!(cart, [("a".to_string(), 3)], "{backend}");
        } else {
            // CQL removes the ordered lines whole (a repeat must be harmless).
            assert!(cart.is_empty(), "{backend}: {cart:?}");
        }
        assert_eq!(unfinished(None).await, 0, "{backend}");
        // A second move to done applies nothing twice.
        assert!(store
            .advance_checkout("k1", checkout_state::ORDERED, checkout_state::DONE, None)
            .await
            .is_err());

        // Released is final too; an emptied cart forgets its activity.
        store.clear_cart("u1").await.unwrap();
        store.set_cart_item("u1", line("c", 1)).await.unwrap();
        let second = Checkout {
            id: "k2".into(),
            items: vec![line("c", 1)],
            ..checkout
        };
        store.begin_checkout(second).await.unwrap();
        store
            .advance_checkout("k2", checkout_state::ACCEPTED, checkout_state::RELEASED, None)
            .await
            .unwrap();
        assert_eq!(unfinished(None).await, 0, "{backend}");
        assert_eq!(
            store.cart("u1").await.unwrap().len(),
            1,
            "{backend}: a released checkout keeps the cart"
        );
        subject.finish(&store).await;
    }
}
