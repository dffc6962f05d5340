from esrkit.cli.main import main

main()
