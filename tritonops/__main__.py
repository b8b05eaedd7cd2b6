from tritonops.cli import main

main()
