"""The demo business: a made-up company's CRM, billing, auth, monitoring, deploys and knowledge
base, served as an MCP server (`counterpoint-demo-business`).

It is not part of Counterpoint: it stands in for the business systems a team already has, and
Counterpoint's agents reach it the way they reach a team's own systems, as a tool source named
in configuration. `make demo` and `counterpoint up` start it when no project file says
otherwise. Counterpoint never imports it (an import-linter contract checks that).
"""
