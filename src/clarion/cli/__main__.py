from clarion.cli.main import main

main()
