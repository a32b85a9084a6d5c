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

async fn open(dir: &TempDir, registry: &Registry) -> Store {
    Store::open_sqlite(&dir.0.join("test.db"), QueryMetrics::declare(registry).unwrap())
        .await
        .unwrap()
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
    let dir = TempDir::new("stock");
    let store = open(&dir, &Registry::new()).await;
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
                assert_eq!(available, 0);
                short += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, short), (7, 43));
    assert_eq!(store.product(&product.id).await.unwrap().stock, 0);
}

#[tokio::test]
async fn a_multi_line_decrement_is_all_or_nothing() {
    let dir = TempDir::new("atomic");
    let store = open(&dir, &Registry::new()).await;
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
        }
    );
    assert_eq!(store.product(&a.id).await.unwrap().stock, 5, "rolled back");
    assert_eq!(
        store.decrement_stock(vec![("nope".into(), 1)]).await,
        Err(StoreError::NotFound)
    );
}

#[tokio::test]
async fn data_survives_reopening_and_queries_are_measured() {
    let dir = TempDir::new("reopen");
    let registry = Registry::new();
    let metrics = QueryMetrics::declare(&registry).unwrap();
    let path = dir.0.join("shop.db");
    let (product, user, order) = {
        let store = Store::open_sqlite(&path, metrics.clone()).await.unwrap();
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
    let store = Store::open_sqlite(&path, metrics).await.unwrap();
    assert_eq!(store.product(&product.id).await.unwrap(), product);
    assert_eq!(store.categories().await.unwrap(), ["Home"]);
    assert_eq!(
        store.user_by_username("ANN").await.unwrap().id,
        user.id,
        "usernames ignore case"
    );
    assert_eq!(store.cart(&user.id).await.unwrap()[0].quantity, 2);
    let reopened = store.order(&order.id).await.unwrap();
    assert_eq!(reopened.status, "PAID");
    let statuses: Vec<_> = reopened.history.iter().map(|h| h.status.as_str()).collect();
    assert_eq!(statuses, ["CREATED", "PAID"]);
    assert_eq!(reopened.total, 19.0);
    assert_eq!(store.user_orders(&user.id).await.unwrap().len(), 1);
    assert_eq!(store.orders_in_status("PAID", 10).await.unwrap().len(), 1);

    let text = registry.encode_text();
    for series in [
        r#"cassandra_query_duration_seconds_count{operation="INSERT",table="products"} 1"#,
        r#"cassandra_query_duration_seconds_count{operation="UPDATE",table="orders"} 1"#,
        r#"cassandra_query_duration_seconds_count{operation="UPSERT",table="carts"} 1"#,
    ] {
        assert!(text.contains(series), "{series} missing in\n{text}");
    }
}

#[tokio::test]
async fn conflicts_stale_writes_and_missing_rows_are_told_apart() {
    let dir = TempDir::new("errors");
    let store = open(&dir, &Registry::new()).await;
    store
        .create_user("bob", "bob@example.com", "h", "customer")
        .await
        .unwrap();
    assert_eq!(
        store
            .create_user("BOB", "other@example.com", "h", "customer")
            .await
            .unwrap_err(),
        StoreError::Conflict("username already taken".into())
    );
    assert_eq!(
        store
            .create_user("bobby", "Bob@Example.com", "h", "customer")
            .await
            .unwrap_err(),
        StoreError::Conflict("email already taken".into())
    );
    let order = store.create_order("u1", Vec::new(), "CREATED").await.unwrap();
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
        }
    );
    assert_eq!(store.order("missing").await.unwrap_err(), StoreError::NotFound);
    assert_eq!(
        store.delete_product("missing").await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.restock("missing", 1).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(store.cart("nobody").await.unwrap().is_empty());
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

    let dir = TempDir::new("spans");
    let store = open(&dir, &Registry::new()).await;
    let sink = Arc::new(Collect::default());
    // The sink is process-wide; other tests in this binary may add spans too, so look for ours.
    obskit::trace::set_sink(sink.clone());
    let _ = store.categories().await;
    obskit::trace::clear_sink();
    let spans = sink.0.lock().unwrap();
    let span = spans
        .iter()
        .find(|s| s.name == "SELECT categories")
        .expect("a span for the query");
    assert_eq!(span.kind, SpanKind::Client);
    let str_attr = |k: &str| match span.attribute(k) {
        Some(AttrValue::Str(s)) => s.to_string(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(str_attr("db.system.name"), "sqlite");
    assert_eq!(str_attr("db.collection.name"), "categories");
    assert_eq!(str_attr("db.operation.name"), "SELECT");
    assert_eq!(str_attr("db.namespace"), "test");
}

#[test]
fn ids_look_like_uuid_v4() {
    let id = new_id();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    assert_ne!(id, new_id());
}
