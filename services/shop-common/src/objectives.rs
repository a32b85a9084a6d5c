//! The shop's service-level objectives: the flows a shopper feels, declared once here and
//! attached to their handlers with `#[obskit::instrumented(objective = ...)]`, or to a route of the
//! RED layer (`ObskitBuilder::route_objective`). Their series carry
//! autometrics' objective labels (`objective_name`, `objective_percentile`,
//! `objective_latency_threshold`), which autometrics' published SLO rules and dashboard read.
//! Each has a section in monitoring/RUNBOOK.md, under its name.

use obskit::objectives::{Objective, ObjectiveLatency, ObjectivePercentile, RouteObjective};

/// Product listing (`GET /api/products`): 99 % of listings within 250 ms.
pub const PRODUCT_LISTING: Objective =
    Objective::new("product-listing").latency(ObjectiveLatency::Ms250, ObjectivePercentile::P99);

/// Checkout (`POST /cart-api/cart/{user_id}/checkout`): 99.9 % succeed (a 5xx is a failure, a
/// 409 for stock that changed is not), 99 % within 1 s (it reserves stock and creates the order
/// in two other services).
pub const CHECKOUT: Objective = Objective::new("checkout")
    .success_rate(ObjectivePercentile::P99_9)
    .latency(ObjectiveLatency::Ms1000, ObjectivePercentile::P99);

/// Login (`POST /auth/login`): 99.9 % answered without a server failure (a wrong password is an
/// answer, not a failure).
pub const LOGIN: Objective = Objective::new("login").success_rate(ObjectivePercentile::P99_9);

/// Every objective of the shop's handlers, for what is generated from them.
pub const ALL: [Objective; 3] = [PRODUCT_LISTING, CHECKOUT, LOGIN];

/// Product pages (`/api/products/{id}`, on the RED layer's route, every method): 99.9 % answered
/// without a server failure (an unknown product's 404 is an answer), 99 % within 100 ms, from
/// the request to the end of the response body.
pub const PRODUCT_PAGE: RouteObjective = RouteObjective::new(
    "/api/products/{id}",
    Objective::new("product-page")
        .success_rate(ObjectivePercentile::P99_9)
        .latency(ObjectiveLatency::Ms100, ObjectivePercentile::P99),
);

/// Every objective of the shop's routes (all the backend's), for what is generated from them.
pub const ROUTES: [RouteObjective; 1] = [PRODUCT_PAGE];
