//! Health checks: `/health`, `/health/live`, `/health/ready`.
