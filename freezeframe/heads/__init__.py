"""Heads that train on cached features (linear probe, EVL, temporal transformer): coming next."""
