from vpsmon.cli import main

main()
