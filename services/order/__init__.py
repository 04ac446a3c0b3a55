"""Order service: price book, agreements, orders (SPEC 2.6), publishes aimis.orders.v1."""
