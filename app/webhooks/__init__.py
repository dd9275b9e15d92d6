"""Webhooks: subscriptions to domain events, delivered signed (Standard Webhooks)."""
