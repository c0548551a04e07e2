"""Tests of the deployment files: udev rules (udev/) and systemd units (deploy/)."""
