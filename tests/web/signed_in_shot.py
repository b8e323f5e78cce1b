#!/usr/bin/python3
"""Signs in to saslgate-web in headless chromium and saves a screenshot of
the app-password page (scripts/demo.sh).

    signed_in_shot.py BASE_URL ACCOUNT PASSWORD OUT.png
"""
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

base, account, password, out = sys.argv[1:5]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.implicitly_wait(10)
    driver.get(base + "/signin")
    driver.find_element(By.NAME, "account").send_keys(account)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.ID, "signin").click()
    driver.find_element(By.ID, "apps")  # waits for the signed-in page
    driver.save_screenshot(out)
finally:
    driver.quit()
