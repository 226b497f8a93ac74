"""A/B experiments on a route's split: counting (``book``), deciding success
(``success``), the async service that persists and reports (``service``), API and CLI."""
