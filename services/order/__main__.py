import sys

from services.order.app import create_app
from services.order.domain import PriceBookError
from shared.config import get_settings
from shared.service import serve

try:
    app = create_app()
except PriceBookError as e:  # a bad price book stops the service with one clear line
    sys.exit(f"order service not started: {e}")
serve(app, get_settings(), "order")
