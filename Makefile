VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install migration bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/clarion demo

test: $(STAMP)
	$(PY) -m pytest -q

# Regenerate the migration for model changes: make migration MSG="add x"
migration: $(STAMP)
	rm -f var/autogen.db
	CLARION_DATABASE_URL=sqlite:///var/autogen.db $(PY) -c "from clarion.migrate import upgrade; upgrade('sqlite:///var/autogen.db')"
	$(PY) -c "from alembic import command; from clarion.migrate import alembic_config; command.revision(alembic_config('sqlite:///var/autogen.db'), message='$(MSG)', autogenerate=True)"
	rm -f var/autogen.db

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf var .pytest_cache

# Before the first release only: rebuild 0001 from the models (every helper's model edits included).
regen-initial: $(STAMP)
	rm -f var/autogen.db src/clarion/migrations/versions/0001_initial_schema.py
	$(PY) -c "from alembic import command; from clarion.migrate import alembic_config; command.revision(alembic_config('sqlite:///var/autogen.db'), message='initial schema', autogenerate=True, rev_id='0001')"
	mv src/clarion/migrations/versions/0001_initial_schema.py /tmp/0001.py && sed 's/astext_type=Text()/astext_type=sa.Text()/g' /tmp/0001.py > src/clarion/migrations/versions/0001_initial_schema.py
	rm -f var/autogen.db
