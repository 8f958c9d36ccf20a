"""The web layer: middleware, pages and JSON API. It holds no business rule."""
