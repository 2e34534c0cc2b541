//! Tests: webhooks (see the issue-3 slices).
