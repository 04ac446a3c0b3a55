import uvicorn

from services.console.app import create_app
from services.console.settings import ConsoleSettings

if __name__ == "__main__":
    s = ConsoleSettings()
    uvicorn.run(create_app(s), host=s.host, port=s.console_port, log_level=s.log_level.lower(),
                proxy_headers=False)
