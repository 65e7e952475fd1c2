"""The Python SDK a business system embeds: publish tickets and alerts, wait for results."""
