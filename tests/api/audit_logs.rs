//! Tests: audit_logs (see the issue-3 slices).
