from services.expiry.app import create_app
from shared.config import get_settings
from shared.service import serve

serve(create_app(), get_settings(), "expiry")
