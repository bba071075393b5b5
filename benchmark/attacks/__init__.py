"""Adversarial evaluation through TextAttack."""
