//! Test support for cross-service tests.
