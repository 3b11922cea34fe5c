from portal.accounts.roles import ROLE_LABELS, user_roles


def roles(request):
    held = user_roles(getattr(request, "user", None))
    return {"user_roles": held, "user_role_labels": [ROLE_LABELS[r] for r in held]}
