from services.entitlement.app import create_app
from shared.config import get_settings
from shared.service import serve

serve(create_app(), get_settings(), "entitlement")
