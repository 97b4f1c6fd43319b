#pragma once
#include "cohort/k8s/reconcile.h"
