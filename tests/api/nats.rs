//! Tests: nats (see the issue-3 slices).
