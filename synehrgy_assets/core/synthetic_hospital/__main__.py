"""`python -m synehrgy_assets.core.synthetic_hospital --out DIR ...`"""

from synehrgy_assets.core.synthetic_hospital.generate import main

raise SystemExit(main())
