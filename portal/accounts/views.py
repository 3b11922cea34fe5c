"""The signed-in person's preferences page (time zone)."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from portal.accounts import services
from portal.accounts.forms import PreferencesForm


@login_required
def preferences(request):
    user = request.user
    if request.method == "POST":
        form = PreferencesForm(request.POST)
        if form.is_valid():
            services.set_timezone(user, form.cleaned_data["timezone"])
            messages.success(request, f"Times are now shown in {user.timezone}.")
            return redirect("page-preferences")
    else:
        form = PreferencesForm(initial={"timezone": user.timezone})
    return render(request, "accounts/preferences.html", {"form": form})
