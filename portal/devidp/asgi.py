import os

os.umask(0o077)  # the provider's database and keys stay private: see portal.core.private_files

from django.core.asgi import get_asgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "portal.devidp.settings"
application = get_asgi_application()
