"""Topic names (SPEC 5.0, 7.2). Every topic is keyed by org_id."""

USAGE = "aimis.usage.v1"
USAGE_REJECTED = "aimis.usage.rejected.v1"
ORDERS = "aimis.orders.v1"
DEDUCTIONS = "aimis.metering.deductions.v1"
LEDGER = "aimis.ledger.v1"
EXPIRY_COMMANDS = "aimis.expiry.commands.v1"
NOTIFICATIONS = "aimis.notifications.v1"
ORDER_DLQ = "aimis.order.dlq.v1"
METERING_DLQ = "aimis.metering.dlq.v1"
ENTITLEMENT_DLQ = "aimis.entitlement.dlq.v1"
EXPIRY_DLQ = "aimis.expiry.dlq.v1"

ALL = (
    USAGE,
    USAGE_REJECTED,
    ORDERS,
    DEDUCTIONS,
    LEDGER,
    EXPIRY_COMMANDS,
    NOTIFICATIONS,
    ORDER_DLQ,
    METERING_DLQ,
    ENTITLEMENT_DLQ,
    EXPIRY_DLQ,
)
