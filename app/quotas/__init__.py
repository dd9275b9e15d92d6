"""Quotas: how much of the lab one user or one team may hold."""
