"""Orchestration across stages and hosts: up, and later shutdown, reboot and status."""
