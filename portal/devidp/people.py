"""The seeded people of the development provider: one per role, an outsider, and one without a
role. Their shared password is generated at first start into var/secrets/ (never committed)."""

PEOPLE = [
    # username, given name, family name, roles, organisation
    ("clinician", "Clara", "Ruiz", ["clinician"], "hosp-a"),
    ("clinicianb", "Bruno", "Costa", ["clinician"], "hosp-b"),  # registers hospital B's datasets
    ("clinicianc", "Chiara", "Conti", ["clinician"], "hosp-c"),
    ("coordinator", "Marco", "Bianchi", ["coordinator"], "hosp-a"),
    ("datamanager", "Dana", "Keller", ["data_manager"], "hosp-a"),
    ("nodeoperator", "Otto", "Lind", ["node_operator"], "hosp-a"),
    ("admin", "Ada", "Moreau", ["administrator"], "hosp-a"),
    ("outsider", "Olga", "Novak", ["node_operator"], "hosp-z"),
    ("norole", "Nora", "Field", [], "hosp-a"),
]
