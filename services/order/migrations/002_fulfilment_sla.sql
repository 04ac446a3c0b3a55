-- Paid orders awaiting fulfilment, oldest first: the fulfilment-SLA watch counts them every few
-- seconds (services/order/sla.py) without scanning every order ever placed.
CREATE INDEX orders_awaiting_fulfilment ON orders (paid_at) WHERE status = 'paid';
