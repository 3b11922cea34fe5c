from django.contrib.auth.models import AbstractUser
from django.db import models

from portal.accounts.roles import user_roles


class Organisation(models.Model):
    """A hospital or institute taking part in the network."""

    code = models.SlugField(max_length=40, unique=True, help_text="Short stable identifier, e.g. 'hosp-a'.")
    name = models.CharField(max_length=200)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    """A person (or a worker node's service account) known to the portal."""

    organisation = models.ForeignKey(Organisation, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="members")
    timezone = models.CharField(max_length=64, default="UTC",
                                help_text="IANA time zone in which pages show times.")
    is_service_account = models.BooleanField(default=False,
                                             help_text="Worker-node agent, not a person.")

    @property
    def roles(self) -> list[str]:
        return user_roles(self)
