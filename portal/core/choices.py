from django.db import models


class UseCase(models.TextChoices):
    MDS = "MDS", "Myelodysplastic syndromes"
    AML = "AML", "Acute myeloid leukaemia"
    CMML = "CMML", "Chronic myelomonocytic leukaemia"
    MM = "MM", "Multiple myeloma"
    SCD = "SCD", "Sickle cell disease"
    OTHER = "OTHER", "Other"
