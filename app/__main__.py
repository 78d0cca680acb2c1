from app.editing_app import main

raise SystemExit(main())
