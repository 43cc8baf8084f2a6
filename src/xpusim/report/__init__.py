"""Rendering: console tables, figures and the HTML report page.

``xpusim.report`` names both this package and the API call that builds a report (`xpusim.api.report.report`): the
package is made callable, so ``xpusim.report("resnet50", chips="t4,l4")`` works however it was imported first (the
same device as ``xpusim.compress``)."""

import sys
import types
from typing import Any


class _ReportPackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from xpusim.api.report import report

        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _ReportPackage
