"""CRM store: typed models, repositories and migrations. Imports nothing else of this project."""
