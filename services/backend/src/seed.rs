//! The catalogue a fresh store starts with: enough products and stock for sustained load tests
//! (the seed's flows always buy the first product of a page).

use shop_common::store::NewProduct;

/// Units of each seeded product.
pub(crate) const SEED_STOCK: i64 = 5000;

const CATALOGUE: &[(&str, &[(&str, f64)])] = &[
    (
        "Books",
        &[
            ("A Field Guide to Observability", 39.0),
            ("Designing Data Systems", 45.5),
            ("Rust in Production", 42.0),
            ("The Pragmatic Operator", 29.9),
            ("Queues and Backpressure", 24.0),
            ("Tracing for Humans", 19.5),
            ("Alert Fatigue Cured", 17.0),
            ("Histograms Explained", 12.5),
        ],
    ),
    (
        "Clothing",
        &[
            ("Cotton T-Shirt", 15.0),
            ("Denim Jacket", 79.0),
            ("Hiking Socks", 9.5),
            ("Rain Coat", 99.0),
            ("Wool Beanie", 18.0),
            ("Running Shorts", 25.0),
            ("Linen Shirt", 42.0),
            ("Fleece Hoodie", 55.0),
        ],
    ),
    (
        "Electronics",
        &[
            ("USB-C Cable", 9.9),
            ("Wireless Mouse", 24.9),
            ("Mechanical Keyboard", 89.0),
            ("27-inch Monitor", 249.0),
            ("Noise-Cancelling Headphones", 199.0),
            ("Webcam HD", 59.0),
            ("Portable SSD 1TB", 119.0),
            ("Smart Plug", 19.9),
        ],
    ),
    (
        "Home",
        &[
            ("Desk Lamp", 34.0),
            ("Ceramic Mug", 8.5),
            ("French Press", 27.0),
            ("Throw Blanket", 39.0),
            ("Plant Pot", 12.0),
            ("Wall Clock", 22.0),
            ("Cutting Board", 18.5),
            ("Scented Candle", 14.0),
        ],
    ),
    (
        "Sports",
        &[
            ("Yoga Mat", 29.0),
            ("Water Bottle", 14.5),
            ("Jump Rope", 9.0),
            ("Dumbbell Set", 89.0),
            ("Tennis Balls", 7.5),
            ("Cycling Gloves", 21.0),
            ("Foam Roller", 24.0),
            ("Resistance Bands", 16.0),
        ],
    ),
    (
        "Toys",
        &[
            ("Building Blocks", 34.9),
            ("Puzzle 1000 Pieces", 19.9),
            ("Toy Robot", 49.0),
            ("Board Game Classic", 29.5),
            ("Kite", 15.0),
            ("Plush Bear", 18.0),
            ("Model Train", 79.0),
            ("Card Game", 9.9),
        ],
    ),
];

/// The seeded products: six categories of eight products, [`SEED_STOCK`] units each.
pub(crate) fn catalogue() -> Vec<NewProduct> {
    CATALOGUE
        .iter()
        .flat_map(|(category, products)| {
            products.iter().map(move |(name, price)| NewProduct {
                name: (*name).to_string(),
                description: format!("{name}, from our {} range.", category.to_lowercase()),
                price: *price,
                category: (*category).to_string(),
                stock: SEED_STOCK,
            })
        })
        .collect()
}
