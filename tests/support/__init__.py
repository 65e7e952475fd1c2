"""Test aids shared by unit and integration tests."""
